"""Who may use the console, and in which projects.

Global admins (staff superusers) see every project. Project admins (a membership with the admin
role or the project-admin flag) may log in to the admin site and see the console for their own
projects only: every console page resolves its object's project through `console_access`, which
answers NotFound (404) for any other project, exactly like a missing object. Members and viewers
do not get in (the console is an operator's tool; they have the API)."""

from __future__ import annotations

from django.db.models import Q

from apps.core.exceptions import NotFound
from apps.core.tenancy import ProjectAccess, Role, project_access


def _admin_memberships(user):
    from apps.accounts.models import Membership

    return Membership.objects.filter(user=user).filter(
        Q(role=Role.ADMIN) | Q(is_project_admin=True)
    )


def is_console_user(user) -> bool:
    """True for active global admins (staff) and active admins of at least one project."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff:
        return True
    if getattr(user, "is_service_account", False):
        return False
    return _admin_memberships(user).exists()


def console_project_ids(user) -> list[str] | None:
    """The ids of the projects `user` administers; None for a global admin (every project)."""
    if user.is_superuser:
        return None
    return list(_admin_memberships(user).values_list("project_id", flat=True))


def console_access(user, project_id) -> ProjectAccess:
    """The caller's rights in `project_id` if they administer it, else NotFound."""
    if not is_console_user(user):
        raise NotFound("Project not found.")
    access = project_access(user=user, project_id=str(project_id))
    if not access.is_admin:
        raise NotFound("Project not found.")
    return access


def scope(queryset, user, field: str = "project_id"):
    """`queryset` limited to the projects `user` administers (unchanged for global admins)."""
    ids = console_project_ids(user)
    return queryset if ids is None else queryset.filter(**{f"{field}__in": ids})
