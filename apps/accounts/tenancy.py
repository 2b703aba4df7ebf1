"""The membership half of tenancy: who is in which project with which role.

`apps.core.tenancy` holds the rules (`ProjectAccess`, `visible_to`, the edit check) and calls
`resolve_access` through the resolver this app registers in `AccountsConfig.ready`.
"""

from __future__ import annotations

from apps.accounts.models import Membership, Project, User
from apps.core.exceptions import NotFound
from apps.core.tenancy import ProjectAccess


def resolve_access(*, user: User, project_id: str) -> ProjectAccess:
    """One query for the common case: the membership with its project (global admins see every
    project); NotFound for a missing project and for one the caller is not a member of."""
    # get(), not first(): a membership is unique per (user, project), and first() would order
    # by Membership's Meta ordering, which joins the users table (user__username) on every
    # request.
    try:
        membership = Membership.objects.select_related("project").get(
            project_id=project_id, user=user
        )
    except Membership.DoesNotExist:
        membership = None
    project: Project | None
    if membership is not None:
        project = membership.project
    elif user.is_superuser:
        project = Project.objects.filter(pk=project_id).first()
    else:
        project = None
    if project is None:
        raise NotFound("Project not found.")
    return ProjectAccess(
        project=project,
        user=user,
        role=membership.role if membership else None,
        is_project_admin=bool(membership and membership.is_project_admin),
        is_global_admin=bool(user.is_superuser),
    )
