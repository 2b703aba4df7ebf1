"""Writes of users, projects and memberships, and issuing tokens."""

import re

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.tokens import RefreshToken

from apps.accounts.models import Membership, Project, User
from apps.accounts.selectors import default_project_for
from apps.core.exceptions import Conflict, NotFound, ValidationFailed
from apps.core.storage import delete_project_files
from apps.core.tenancy import Role


def _validated_password(password: str, user: User | None = None) -> str:
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise ValidationFailed(
            "password: " + " ".join(exc.messages), details={"password": exc.messages}
        ) from None
    return password


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    name: str = "",
    email: str = "",
    is_admin: bool = False,
    is_service_account: bool = False,
) -> User:
    """Create a user (a global admin when `is_admin`); passwords pass Django's validators."""
    if User.objects.filter(username=username).exists():
        raise Conflict(f"User {username!r} already exists.")
    user = User(
        username=username,
        name=name,
        email=email,
        is_superuser=is_admin,
        is_staff=is_admin and not is_service_account,
        is_service_account=is_service_account,
    )
    user.set_password(_validated_password(password, user))
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise Conflict(f"User {username!r} already exists.") from None
    return user


@transaction.atomic
def user_update(*, user: User, **fields) -> User:
    """Change a user's name, email, admin flag, active flag or password."""
    if "password" in fields:
        user.set_password(_validated_password(fields.pop("password"), user))
    if "is_admin" in fields:
        is_admin = fields.pop("is_admin")
        user.is_superuser = is_admin
        user.is_staff = is_admin and not user.is_service_account
    for key, value in fields.items():
        setattr(user, key, value)
    user.save()
    return user


def user_delete(*, user: User, actor: User) -> None:
    if user.pk == actor.pk:
        raise Conflict("You cannot delete yourself.")
    user.delete()


@transaction.atomic
def project_create(
    *,
    actor: User,
    name: str,
    task: str = Project.Task.CLASSIFICATION,
    project_id: str | None = None,
) -> Project:
    """Create a project; its creator becomes its admin."""
    if project_id is not None and Project.objects.filter(pk=project_id).exists():
        raise Conflict(f"Project {project_id!r} already exists.")
    project = Project(name=name, task=task, created_by=actor)
    if project_id is not None:
        project.id = project_id
    project.save(force_insert=True)
    Membership.objects.create(user=actor, project=project, role=Role.ADMIN, is_project_admin=True)
    return project


@transaction.atomic
def home_project_for(*, user: User) -> Project:
    """The user's oldest project, or a new one of their own (id from their username) when they
    have none left: Hanami users always work in a project, also after theirs was deleted."""
    project = default_project_for(user=user)
    if project is not None:
        return project
    base = re.sub(r"[^a-zA-Z0-9_]", "_", user.username)[:50] or "user"
    if not base[0].isalpha():
        base = f"u{base}"
    candidate, n = base, 1
    while Project.objects.filter(pk=candidate).exists():
        n += 1
        candidate = f"{base}_{n}"
    return project_create(actor=user, name=f"{user.username}'s project", project_id=candidate)


def project_update(*, project: Project, **fields) -> Project:
    for key, value in fields.items():
        setattr(project, key, value)
    project.save()
    return project


def project_delete(*, project: Project) -> None:
    """Delete a project with every row it owns (cascade) and, after commit, its files."""
    project_id = project.pk
    with transaction.atomic():
        project.delete()
        transaction.on_commit(lambda: delete_project_files(project_id))


@transaction.atomic
def membership_set(
    *, project: Project, user: User, role: str = Role.MEMBER, is_project_admin: bool = False
) -> Membership:
    """Add `user` to `project`, or change their role there."""
    if role not in Role.values:
        raise ValidationFailed.for_field("role", f"must be one of {', '.join(Role.values)}.")
    membership, _ = Membership.objects.update_or_create(
        project=project,
        user=user,
        defaults={"role": role, "is_project_admin": is_project_admin},
    )
    return membership


def membership_remove(*, project: Project, user: User) -> None:
    deleted, _ = Membership.objects.filter(project=project, user=user).delete()
    if not deleted:
        raise NotFound("Membership not found.")


def token_pair_for(*, user: User, project: Project | None = None) -> dict:
    """A JWT pair whose claims carry the project it is scoped to (the Hanami gateway uses it)."""
    if project is None:
        project = default_project_for(user=user)
    refresh = RefreshToken.for_user(user)
    refresh["project_id"] = project.pk if project else None
    refresh["is_admin"] = user.is_superuser
    return {
        "access": str(refresh.access_token),
        "refresh": str(refresh),
        "project_id": project.pk if project else None,
    }
