"""Tenancy in one place: who may see and change what inside a project.

A Project is a tenant. `project_access` resolves the caller's rights in one project (a missing
project and one the caller is not a member of both raise NotFound); `TenantQuerySet.visible_to`
and `editable_by` are the only way tenant-owned rows are read or written by surfaces, and
`get_visible(access, for_edit=..., denied=...)` the one fetch of a row (404 when not visible, then
403 when `for_edit` and the caller may not change it). Views, consumers, gateways and actors all
go through these helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import Q

from apps.core.exceptions import Forbidden, NotFound

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser as User

    # The project row (`apps.accounts.models.Project`); core knows it only as a model.
    Project = models.Model


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private (owner and project admins)"
    SHARED = "shared", "Shared (every member)"


EDIT_DENIED = "Only the owner or a project admin may change this."


@dataclass(frozen=True)
class ProjectAccess:
    """The caller's rights in one project, resolved once per request, socket or job."""

    project: Project
    user: User
    role: str | None
    is_project_admin: bool
    is_global_admin: bool

    @property
    def is_admin(self) -> bool:
        """Global admins and project admins see and change everything in the project."""
        return self.is_global_admin or self.is_project_admin or self.role == Role.ADMIN

    @property
    def can_write(self) -> bool:
        return self.is_admin or self.role == Role.MEMBER

    def can_edit(self, obj: Any) -> bool:
        """THE edit rule of every surface: changing a resource (training it, saving or loading
        its checkpoints, switching its host or mode, deleting it) needs the owner (with a
        writing role), a project admin or a global admin. Objects of another project: never."""
        project_id = getattr(obj, "project_id", None)
        if project_id is not None and project_id != self.project.pk:
            return False
        if self.is_admin:
            return True
        return self.can_write and getattr(obj, "owner_id", None) == self.user.pk

    def require_edit(self, obj: Any, message: str | None = None) -> None:
        """Forbidden unless the caller may change `obj` (see `can_edit`)."""
        if not self.can_edit(obj):
            raise Forbidden(message or EDIT_DENIED)

    def require_write(self) -> None:
        if not self.can_write:
            raise Forbidden("Your role in this project is read-only.")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("Only project admins may do this.")


def require_edit(access: ProjectAccess, obj: Any, message: str | None = None) -> None:
    """The edit check of an object a surface did not fetch itself (a service given one): Forbidden
    unless `access` may change `obj`. Rows a surface fetches to change go through
    `get_visible(access, for_edit=True)` instead, which answers 404 before 403."""
    access.require_edit(obj, message)


# The membership lookup lives with memberships (`apps.accounts.tenancy.resolve_access`), which
# registers it here when the accounts app is ready: core states the rule, accounts knows the rows.
_resolver: Callable[..., ProjectAccess] | None = None


def register_access_resolver(resolver: Callable[..., ProjectAccess]) -> None:
    global _resolver
    _resolver = resolver


def project_access(*, user: User, project_id: str | None) -> ProjectAccess:
    """Resolve `user`'s rights in `project_id`; NotFound for a missing or foreign project."""
    if user is None or not user.is_authenticated or not isinstance(project_id, str):
        raise NotFound("Project not found.")
    if _resolver is None:
        raise RuntimeError("No tenancy resolver: is apps.accounts in INSTALLED_APPS?")
    return _resolver(user=user, project_id=project_id)


def get_or_not_found(queryset: models.QuerySet, **lookup: Any) -> models.Model:
    """One row of `queryset` or NotFound, also for malformed lookups (a bad UUID is "not found")."""
    try:
        return queryset.get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise NotFound(f"{queryset.model._meta.verbose_name.capitalize()} not found.") from None


def fetch_visible(
    scoped: models.QuerySet,
    access: ProjectAccess,
    *,
    for_edit: bool = False,
    denied: str | None = None,
    **lookup: Any,
) -> models.Model:
    """THE fetch of one tenant row: from `scoped` (already `visible_to(access)`), the row or
    NotFound (missing, foreign and malformed alike); with `for_edit`, then Forbidden (`denied`,
    else EDIT_DENIED) unless the caller may change it. Not visible answers 404 before 403."""
    row = get_or_not_found(scoped, **lookup)
    if for_edit:
        access.require_edit(row, denied)
    return row


class TenantQuerySet(models.QuerySet):
    """The one queryset of every tenant-owned model."""

    def visible_to(self, access: ProjectAccess) -> TenantQuerySet:
        qs = self.filter(project_id=access.project.pk)
        if access.is_admin:
            return qs
        return qs.filter(Q(owner_id=access.user.pk) | Q(visibility=Visibility.SHARED))

    def editable_by(self, access: ProjectAccess) -> TenantQuerySet:
        qs = self.filter(project_id=access.project.pk)
        if access.is_admin:
            return qs
        if not access.can_write:
            return qs.none()
        return qs.filter(owner_id=access.user.pk)

    def get_visible(
        self,
        access: ProjectAccess,
        *,
        for_edit: bool = False,
        denied: str | None = None,
        **lookup: Any,
    ) -> models.Model:
        """One visible row or NotFound (the same answer for missing and foreign); with
        `for_edit`, one the caller may change, else Forbidden (`denied` or EDIT_DENIED)."""
        return fetch_visible(
            self.visible_to(access), access, for_edit=for_edit, denied=denied, **lookup
        )


class ProjectScopedQuerySet(models.QuerySet):
    """For project-owned rows without an owner (memberships, splits): the project is the scope."""

    def visible_to(self, access: ProjectAccess) -> ProjectScopedQuerySet:
        return self.filter(project_id=access.project.pk)

    def editable_by(self, access: ProjectAccess) -> ProjectScopedQuerySet:
        qs = self.filter(project_id=access.project.pk)
        return qs if access.can_write else qs.none()
