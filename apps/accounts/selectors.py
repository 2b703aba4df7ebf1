"""Reads of users, projects and memberships."""

from django.db.models import QuerySet

from apps.accounts.models import Membership, Project, User
from apps.core.exceptions import NotFound


def project_list_for(*, user: User) -> QuerySet[Project]:
    """The projects a user may see: all for global admins, else those they are a member of."""
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def project_get_for(*, user: User, project_id: str) -> Project:
    try:
        return project_list_for(user=user).get(pk=project_id)
    except Project.DoesNotExist:
        raise NotFound("Project not found.") from None


def default_project_for(*, user: User) -> Project | None:
    """The project a fresh token is scoped to: the user's oldest membership."""
    membership = (
        Membership.objects.filter(user=user)
        .select_related("project")
        .order_by("created_at")
        .first()
    )
    return membership.project if membership else None


def user_get(*, username: str) -> User:
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise NotFound("User not found.") from None
