"""Reads in the Hanami protocol's shape (the owning apps' selectors serve the plain lookups)."""

from __future__ import annotations

from django.db.models import Model, Prefetch, QuerySet

from apps.accounts.models import Membership, Project, User
from apps.clusters import selectors as clusters_selectors
from apps.clusters.models import RequestResult
from apps.clusters.services import CLUSTER_TARGET
from apps.core.tenancy import ProjectAccess
from apps.datasets import selectors as datasets_selectors
from apps.hanami.logs import PAGE_SIZE
from apps.tasks.models import Task, target_of


def _memberships() -> QuerySet[Membership]:
    return Membership.objects.order_by("project_id")


def user_memberships(user: User) -> list[Membership]:
    """A user's memberships, by project id."""
    return list(_memberships().filter(user=user))


def user_list() -> list[tuple[User, list[Membership]]]:
    """Every user with their memberships, in two queries whatever their number."""
    users = User.objects.order_by("username").prefetch_related(
        Prefetch("memberships", queryset=_memberships(), to_attr="hanami_memberships")
    )
    return [(user, user.hanami_memberships) for user in users]


def project_list() -> QuerySet[Project]:
    return Project.objects.select_related("created_by").order_by("id")


def task_get(
    *, access: ProjectAccess, task_id: str, cluster_id: str | None = None, for_edit: bool = False
) -> Task:
    """A task the caller sees (of that cluster when given), or NotFound; with `for_edit`, one
    the caller may change, or Forbidden."""
    lookup = {"pk": task_id}
    if cluster_id:
        lookup["target_type"] = CLUSTER_TARGET
        lookup["target_id"] = cluster_id
    return Task.objects.get_visible(access, for_edit=for_edit, **lookup)


def cluster_task_list(*, access: ProjectAccess, cluster) -> QuerySet[Task]:
    """The tasks of a cluster that the caller sees, in their queue order."""
    return Task.objects.visible_to(access).filter(**target_of(cluster)).order_by("sequence")


def request_result_get(
    *, access: ProjectAccess, result_id: str, for_edit: bool = False
) -> RequestResult:
    return RequestResult.objects.get_visible(access, for_edit=for_edit, pk=result_id)


def request_result_list(*, access: ProjectAccess) -> QuerySet[RequestResult]:
    return RequestResult.objects.visible_to(access).select_related("owner")


LAST_PAGE = 2**62 // PAGE_SIZE  # no log holds more rows than this


def log_page(*, model: type[Model], user_id: str, page: int) -> QuerySet:
    """One page (PAGE_SIZE rows, newest first) of a user's audit or error log; a page past the
    end is empty, however far (an offset past 64 bits would be a database error)."""
    if page > LAST_PAGE:
        return model.objects.none()
    start = page * PAGE_SIZE
    return model.objects.filter(user__username=user_id)[start : start + PAGE_SIZE]


def dataset_rows(*, access: ProjectAccess) -> QuerySet:
    return datasets_selectors.dataset_list(access=access).select_related("owner")


def cluster_rows(*, access: ProjectAccess) -> QuerySet:
    return clusters_selectors.cluster_list(access=access).select_related("owner")


def checkpoint_rows(*, access: ProjectAccess) -> QuerySet:
    return clusters_selectors.checkpoint_list(access=access).select_related("owner")
