"""The built-in compute's side of the marketplace: runnable uplets become jobs on the job engine.

Where runnable uplets go: to the project's compute API when it has one (`ComputeEndpoint`: an
outbox row and a `compute_push` job, `apps.marketplace.push`), else to the built-in compute.
The built-in compute runs an uplet only once its data are registered Orchard datasets; an uplet
created before its data (or pushed to a compute API that was then removed) waits `todo` with no
job, and gets its job when its data are registered (`services.data_create`) or the compute API
goes (`uplets_dispatch_waiting`). One job per uplet at most: the job is attached by a
conditional UPDATE (`task IS NULL`), so concurrent requests that both find an uplet runnable
create one job. A `todo` preduplet whose model was deleted before it could run is failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from apps.core.conf import setting
from apps.core.exceptions import OrchardError, ValidationFailed
from apps.marketplace import selectors
from apps.marketplace.models import Algo, Learnuplet, Preduplet, UpletStatus

logger = logging.getLogger(__name__)

REASON_MAX = 2000
LEARNUPLET_KIND = "learnuplet"
PREDUPLET_KIND = "preduplet"


def builtin_compute_enabled() -> bool:
    """`MARKETPLACE_BUILTIN_COMPUTE` (default on): whether new
    runnable uplets get a job on the job engine."""
    value = setting("MARKETPLACE_BUILTIN_COMPUTE")
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def _fail_waiting(uplet: Learnuplet | Preduplet, reason: str) -> bool:
    """`todo -> failed` for an uplet that can never run (no worker has it); False when a worker
    claimed it meanwhile."""
    now = timezone.now()
    failed = (
        type(uplet)
        .objects.filter(pk=uplet.pk, status=UpletStatus.TODO)
        .update(
            status=UpletStatus.FAILED,
            failure_reason=reason[:REASON_MAX],
            timestamp_done=now,
            updated_at=now,
        )
    )
    if failed:
        logger.warning("%s failed: %s", uplet, reason)
        uplet.refresh_from_db()
    return bool(failed)


def on_dataset_ready(sender, dataset, **kwargs) -> None:
    """A dataset registered as data while it was still uploading is ready now: the uplets that
    name it may run (`apps.datasets.signals.dataset_ready`)."""
    from apps.marketplace.models import Data

    uuids = [str(u) for u in Data.objects.filter(dataset=dataset).values_list("uuid", flat=True)]
    if uuids:
        with transaction.atomic():
            dispatch_waiting(project_id=dataset.project_id, data_uuids=uuids)


@transaction.atomic
def uplets_dispatch_waiting(*, project_id) -> None:
    """Give the built-in compute every `todo` uplet of the project that it can run but has no job
    for (the project's compute API was removed or disabled: the built-in compute runs its uplets
    again), once each."""
    dispatch_waiting(project_id=project_id, data_uuids=None)


def dispatch_waiting(*, project_id, data_uuids: Sequence[str] | None) -> None:
    """The built-in compute's share of the `todo` uplets of a project that have no job yet: those
    naming one of `data_uuids` (all of them when None). Each gets its job when it can run now;
    a preduplet whose model was deleted meanwhile is failed. Nothing while the project has a
    compute API (the uplets were pushed to it when they became runnable)."""
    from apps.marketplace import push

    if not builtin_compute_enabled() or push.endpoint_url(project_id) is not None:
        return
    wanted = None if data_uuids is None else {str(u) for u in data_uuids}

    def names_wanted(uuids: Iterable[str]) -> bool:
        return wanted is None or not wanted.isdisjoint(uuids)

    learnuplets = (
        Learnuplet.objects.filter(
            project_id=project_id,
            status=UpletStatus.TODO,
            model_start__isnull=False,
            task__isnull=True,
        )
        .filter(Q(algo__cluster__isnull=False) | ~Q(algo__architecture=""))
        .select_related("algo", "problem")
        .order_by("algo_id", "rank")
    )
    for uplet in learnuplets:
        if names_wanted([*uplet.train_data, *uplet.test_data]):
            _builtin_learnuplet(uplet)
    # Only predictions with a model the built-in compute trained (the others are HTTP workers').
    trained_here = Learnuplet.objects.filter(
        project_id=OuterRef("project_id"), model_end=OuterRef("model"), task__isnull=False
    )
    preduplets = (
        Preduplet.objects.filter(project_id=project_id, status=UpletStatus.TODO, task__isnull=True)
        .filter(Exists(trained_here))
        .order_by("id")
    )
    for uplet in preduplets:
        if names_wanted(uplet.data_uuids) and not _fail_if_model_deleted(uplet):
            _builtin_preduplet(uplet)


def dispatch_learnuplet(uplet: Learnuplet) -> None:
    """A learnuplet became runnable: push it to the project's compute API when it has one;
    otherwise give it to the built-in compute."""
    from apps.marketplace import push

    if push.push_if_configured(uplet):
        return
    _builtin_learnuplet(uplet)


def _builtin_learnuplet(uplet: Learnuplet) -> None:
    """Give a runnable learnuplet to the built-in compute when it can run it (an Orchard model
    and Orchard datasets), once; otherwise it waits (for its data, or an HTTP compute worker)."""
    if uplet.task_id is not None or not builtin_compute_enabled():
        return
    if not uplet.algo.is_builtin:
        return
    datasets = selectors.datasets_for(
        project_id=uplet.project_id, uuids=[*uplet.train_data, *uplet.test_data]
    )
    if datasets is None:
        return
    try:
        with transaction.atomic():
            algo = uplet.algo
            if algo.cluster_id is None:
                # Read again, locked: another uplet of the algo may have built its cluster.
                algo = uplet.algo = Algo.objects.select_for_update().get(pk=algo.pk)
            cluster = algo.cluster or _algo_cluster_from_architecture(algo, datasets.values())
            _create_task(uplet, LEARNUPLET_KIND, cluster, f"learnuplet {uplet.rank} of {algo.name}")
    except _AlreadyDispatched:
        return
    except OrchardError as exc:
        logger.warning("learnuplet %s left to HTTP workers: %s", uplet.uuid, exc.message)


def dispatch_preduplet(uplet: Preduplet) -> None:
    """A new preduplet (its model one that exists): push it to the project's compute API when it
    has one; otherwise give it to the built-in compute."""
    from apps.marketplace import push

    if push.push_if_configured(uplet):
        return
    _builtin_preduplet(uplet)


def _fail_if_model_deleted(uplet: Preduplet) -> bool:
    """Fail a `todo` preduplet whose model (a Checkpoint) was deleted after it was asked for:
    nobody can run it. True when it is failed now."""
    if not selectors.model_deleted(project_id=uplet.project_id, model=uplet.model):
        return False
    return _fail_waiting(
        uplet,
        f"model {uplet.model} was deleted before the prediction could run; ask the prediction "
        "again to use the best model left.",
    )


def _builtin_preduplet(uplet: Preduplet) -> None:
    """Give a preduplet to the built-in compute when it can run it (its model a Checkpoint of a
    cluster, its data Orchard datasets), once; otherwise it waits."""
    from apps.clusters.models import Checkpoint

    if uplet.task_id is not None or not builtin_compute_enabled():
        return
    checkpoint = (
        Checkpoint.objects.filter(project_id=uplet.project_id, pk=uplet.model)
        .select_related("cluster")
        .first()
    )
    if checkpoint is None or checkpoint.cluster is None:
        return
    if selectors.datasets_for(project_id=uplet.project_id, uuids=uplet.data_uuids) is None:
        return
    try:
        with transaction.atomic():
            _create_task(uplet, PREDUPLET_KIND, checkpoint.cluster, f"preduplet {uplet.uuid}")
    except _AlreadyDispatched:
        return
    except OrchardError as exc:
        logger.warning("preduplet %s left to HTTP workers: %s", uplet.uuid, exc.message)


class _AlreadyDispatched(Exception):
    """Another request gave the uplet its job first (or a worker claimed it): roll back ours."""


def _create_task(uplet, kind: str, cluster, name: str) -> None:
    """Create the uplet's job and attach it, conditional on the uplet having none and still
    being `todo` (raises _AlreadyDispatched otherwise, so the caller's savepoint drops the job
    and its message)."""
    from apps.clusters.services import cluster_task_create

    task = cluster_task_create(
        project=uplet.project,
        actor=uplet.owner,
        kind=kind,
        name=name[:200],
        cluster=cluster,
        params={"uplet_id": uplet.pk},
    )
    attached = (
        type(uplet)
        .objects.filter(pk=uplet.pk, task__isnull=True, status=UpletStatus.TODO)
        .update(task=task, updated_at=timezone.now())
    )
    if not attached:
        raise _AlreadyDispatched()
    uplet.task = task


def _algo_cluster_from_architecture(algo: Algo, datasets: Iterable):
    """The cluster of an architecture algo, created from its data's shape on first use."""
    from apps.clusters.services import cluster_create_from_architecture

    datasets = list(datasets)
    classes = max((d.num_classes or 0) for d in datasets)
    if classes < 1:
        raise ValidationFailed.for_field("data", "the data have no class labels.")
    cluster = cluster_create_from_architecture(
        project=algo.project,
        actor=algo.owner,
        name=f"marketplace {algo.name}"[:200],
        architecture=algo.architecture,
        input_shape=list(datasets[0].input_shape),
        num_classes=classes,
        seed=algo.uuid.int % (2**31),
    )
    algo.cluster = cluster
    algo.save(update_fields=["cluster", "updated_at"])
    return cluster
