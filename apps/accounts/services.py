"""Writes of users, projects and memberships, and issuing tokens.

Invariants kept here for every surface (main API, Hanami gateway, admin commands):
- a project never loses its last admin (a member with role admin or is_project_admin): demoting or
  removing them, or deleting/deactivating their account while other members remain, is a
  Conflict (409);
- adding a member who is already one is a Conflict (`membership_add`); roles change through
  `membership_set` / PATCH only;
- a user owns at most PROJECTS_MAX_PER_USER projects (default 50, global admins exempt).
"""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from rest_framework_simplejwt.tokens import RefreshToken

from apps.accounts.models import Membership, Project, User
from apps.accounts.selectors import default_project_for
from apps.core.conf import setting
from apps.core.exceptions import Conflict, NotFound, PayloadTooLarge, ValidationFailed
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
    if fields.get("is_active") is False and user.is_active:
        _require_not_last_admin_anywhere(user, "deactivate")
    for key, value in fields.items():
        setattr(user, key, value)
    user.save()
    return user


@transaction.atomic
def user_delete(*, user: User, actor: User) -> None:
    if user.pk == actor.pk:
        raise Conflict("You cannot delete yourself.")
    _require_not_last_admin_anywhere(user, "delete")
    user.delete()


def projects_max_per_user() -> int:
    return int(setting("PROJECTS_MAX_PER_USER"))


def _require_project_quota(actor: User) -> None:
    """PROJECTS_MAX_PER_USER: projects a user created (global admins are exempt)."""
    if actor is None or actor.is_superuser:
        return
    limit = projects_max_per_user()
    # Lock the creator's row: two concurrent creations cannot both pass the count.
    User.objects.select_for_update().filter(pk=actor.pk).first()
    if Project.objects.filter(created_by=actor).count() >= limit:
        raise PayloadTooLarge(
            f"You may create at most {limit} projects (PROJECTS_MAX_PER_USER); "
            "delete one first or ask an admin.",
            details={"limit": "PROJECTS_MAX_PER_USER", "max": limit},
        )


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
    _require_project_quota(actor)
    project = Project(name=name, task=task, created_by=actor)
    if project_id is not None:
        project.id = project_id
    try:
        with transaction.atomic():  # a concurrent creation of the same id wins: 409, not 500
            project.save(force_insert=True)
    except IntegrityError:
        raise Conflict(f"Project {project_id!r} already exists.") from None
    Membership.objects.create(user=actor, project=project, role=Role.ADMIN, is_project_admin=True)
    return project


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


def _is_admin_membership(role: str, is_project_admin: bool) -> bool:
    return role == Role.ADMIN or bool(is_project_admin)


def _admin_memberships(project_id):
    return Membership.objects.filter(project_id=project_id).filter(
        Q(role=Role.ADMIN) | Q(is_project_admin=True)
    )


def _lock_memberships(project_id) -> list[Membership]:
    """Lock the project's membership rows: concurrent changes cannot both remove an admin."""
    # Ordered by pk: one lock order, and no join (Meta's ordering joins the users table, whose
    # rows FOR UPDATE would lock too).
    return list(Membership.objects.select_for_update().filter(project_id=project_id).order_by("pk"))


def _require_other_admin(project_id, user: User, verb: str) -> None:
    _lock_memberships(project_id)
    if not _admin_memberships(project_id).exclude(user=user).exists():
        raise Conflict(
            f"{user.username} is the last admin of project {project_id}: make another member "
            f"admin before you {verb} them (or delete the project)."
        )


def _require_not_last_admin_anywhere(user: User, verb: str) -> None:
    """Deleting or deactivating an account must not leave a project's members without admin."""
    stranded = []
    for project_id in _admin_memberships_of(user):
        others = Membership.objects.filter(project_id=project_id).exclude(user=user)
        if others.exists() and not _admin_memberships(project_id).exclude(user=user).exists():
            stranded.append(project_id)
    if stranded:
        raise Conflict(
            f"{user.username} is the last admin of project(s) {', '.join(sorted(stranded))}: "
            f"make another member admin there before you {verb} this account.",
            details={"projects": sorted(stranded)},
        )


def _admin_memberships_of(user: User) -> list[str]:
    qs = Membership.objects.filter(user=user).filter(Q(role=Role.ADMIN) | Q(is_project_admin=True))
    return list(qs.order_by().values_list("project_id", flat=True))


def _valid_role(role: str) -> str:
    if role not in Role.values:
        raise ValidationFailed.for_field("role", f"must be one of {', '.join(Role.values)}.")
    return role


@transaction.atomic
def membership_add(
    *, project: Project, user: User, role: str = Role.MEMBER, is_project_admin: bool = False
) -> Membership:
    """Add `user` to `project`; Conflict when they already are a member (their role changes
    only through `membership_set`, i.e. PATCH)."""
    _valid_role(role)
    if Membership.objects.filter(project=project, user=user).exists():
        raise Conflict(
            f"{user.username} is already a member of project {project.pk}; "
            "change their role with PATCH instead."
        )
    try:
        with transaction.atomic():
            return Membership.objects.create(
                project=project, user=user, role=role, is_project_admin=is_project_admin
            )
    except IntegrityError:
        raise Conflict(f"{user.username} is already a member of project {project.pk}.") from None


@transaction.atomic
def membership_set(
    *, project: Project, user: User, role: str = Role.MEMBER, is_project_admin: bool = False
) -> Membership:
    """Add `user` to `project`, or change their role there; the last admin of a project
    cannot be demoted (Conflict)."""
    _valid_role(role)
    current = Membership.objects.filter(project=project, user=user).first()
    if (
        current is not None
        and _is_admin_membership(current.role, current.is_project_admin)
        and not _is_admin_membership(role, is_project_admin)
    ):
        _require_other_admin(project.pk, user, "demote")
    membership, _ = Membership.objects.update_or_create(
        project=project,
        user=user,
        defaults={"role": role, "is_project_admin": is_project_admin},
    )
    return membership


@transaction.atomic
def membership_remove(*, project: Project, user: User) -> None:
    """Remove `user` from `project`; the last admin of a project cannot be removed (Conflict)."""
    current = Membership.objects.filter(project=project, user=user).first()
    if current is None:
        raise NotFound("Membership not found.")
    if _is_admin_membership(current.role, current.is_project_admin):
        _require_other_admin(project.pk, user, "remove")
    Membership.objects.filter(pk=current.pk).delete()


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
