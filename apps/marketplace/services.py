"""Writes of the marketplace: registering problems, algos and data, creating uplets, and their
status machine. Both the `/orchestrator/` gateway and the built-in compute go through here.

Learnuplet rules (protocol page "Learnuplet rules", relaxed where upstream's clients rely on it):
- An algo's training data are its problem's data minus the problem's test data, in registration
  order, cut into batches of `size_train_dataset`: one learnuplet per batch, ranks 0..n-1, all
  `todo`, each with a fresh `model_end`.
- The first learnuplet of each new batch series gets its `model_start` at creation (upstream
  does the same): rank 0 of a new algo starts from the algo itself (`algo.uuid`); the first rank
  appended by new data starts from the best done model of the algo so far (the algo itself while
  none is done). Upstream points it at the last rank's `model_end`, a model that may not exist
  yet; Orchard names one that does.
- When rank r is done or failed, rank r+1 (while still `todo`) starts from the `model_end` of the
  best-performing done learnuplet of the algo so far (the algo itself while none is done), so a
  chain continues from the best model and never stalls. A late `done` for a failed rank updates
  rank r+1 again when the best model changed, as upstream does.
- Known data registered for another problem are linked to it (upstream links them too); a
  (data, problem) pair that is already linked is refused. New data for a problem append
  learnuplets to every algo of the problem (ranks continue).
- A prediction uses the problem's best model (highest `perf` of its done learnuplets) that still
  exists: a model the built-in compute trained is a Checkpoint, which a project member may delete;
  the chains skip deleted models too. No model left: 400. A `todo` preduplet whose model is
  deleted before it could run is failed (`todo -> failed`, with a `failure_reason`).

Transitions are conditional UPDATEs: `todo -> pending` (claim; any `todo` rank that has a
`model_start`), `pending -> done | failed` and `failed -> done` (report, only by the account that
claimed the uplet, or a project admin). `done` is final.

Where runnable uplets go (the compute API, or the built-in compute once their data are
Orchard datasets, one job each): `apps.marketplace.dispatch`.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.core.exceptions import Conflict, ValidationFailed
from apps.marketplace import dispatch, selectors
from apps.marketplace.models import (
    FINISHED_STATUSES,
    Algo,
    Data,
    Learnuplet,
    Preduplet,
    Problem,
    UpletStatus,
)

if TYPE_CHECKING:
    from apps.accounts.models import User
    from apps.core.tenancy import ProjectAccess

logger = logging.getLogger(__name__)

# --- problems, algos, data -----------------------------------------------------------------------


@transaction.atomic
def problem_create(
    *,
    access: ProjectAccess,
    uuid: str,
    workflow: str,
    test_dataset: Sequence[str],
    size_train_dataset: int,
) -> Problem:
    """Register a problem of the caller's project."""
    project = access.project
    if Problem.objects.filter(project=project, uuid=uuid).exists():
        raise ValidationFailed.for_field("uuid", f"problem {uuid} already exists.")
    return Problem.objects.create(
        project=project,
        owner=access.user,
        uuid=uuid,
        workflow=workflow,
        test_dataset=list(test_dataset),
        size_train_dataset=size_train_dataset,
    )


@transaction.atomic
def algo_create(
    *, access: ProjectAccess, uuid: str, name: str, problem_uuid: str
) -> tuple[Algo, int]:
    """Register an algo for a problem and create its learnuplets; returns (algo, new learnuplets).

    The algo is the cluster whose id is `uuid` when the caller sees one, else the
    `ml.architectures` architecture called `name` when there is one, else an external algo.
    """
    from apps.clusters.models import Cluster

    project = access.project
    problem = Problem.objects.visible_to(access).filter(uuid=problem_uuid).first()
    if problem is None:
        raise ValidationFailed.for_field("problem", f"problem {problem_uuid} does not exist.")
    if Algo.objects.filter(project=project, uuid=uuid).exists():
        raise ValidationFailed.for_field("uuid", f"algo {uuid} already exists.")
    cluster = Cluster.objects.visible_to(access).filter(pk=uuid).first()
    architecture = "" if cluster is not None else _architecture_named(name)
    algo = Algo.objects.create(
        project=project,
        owner=access.user,
        uuid=uuid,
        name=name,
        problem=problem,
        cluster=cluster,
        architecture=architecture,
    )
    train = [u for u in selectors.problem_data_uuids(problem) if u not in set(problem.test_dataset)]
    created = _append_learnuplets(algo, train)
    return algo, created


def _architecture_named(name: str) -> str:
    from ml.architectures import architecture_names

    return name if name in architecture_names() else ""


@transaction.atomic
def data_create(
    *, access: ProjectAccess, uuids: Sequence[str], problem_uuids: Sequence[str]
) -> tuple[list[Data], int]:
    """Register data for problems; every algo of those problems gets learnuplets for the new
    training data. A data uuid the project already knows is linked to the named problems (as
    upstream does), unless it already belongs to one of them. Returns (the data in request
    order, new learnuplets)."""
    from apps.datasets.models import Dataset

    project = access.project
    if len(set(uuids)) != len(uuids):
        raise ValidationFailed.for_field("uuid", "lists the same data twice.")
    problems = list(Problem.objects.visible_to(access).filter(uuid__in=problem_uuids))
    found = {str(p.uuid) for p in problems}
    missing = [u for u in problem_uuids if u not in found]
    if missing:
        raise ValidationFailed.for_field("problems", f"problem {missing[0]} does not exist.")
    _lock_problems(problems)
    known = {
        str(row.uuid): row
        for row in Data.objects.filter(project=project, uuid__in=uuids).prefetch_related("problems")
    }
    visible = set(
        str(u)
        for u in Data.objects.visible_to(access)
        .filter(uuid__in=list(known))
        .values_list("uuid", flat=True)
    )
    for u in uuids:
        row = known.get(u)
        if row is None:
            continue
        if u not in visible:
            raise ValidationFailed.for_field("uuid", f"data {u} already exists.")
        linked = {str(p.uuid) for p in row.problems.all()}
        already = [p for p in problem_uuids if p in linked]
        if already:
            raise ValidationFailed.for_field(
                "uuid", f"data {u} is already registered for problem {already[0]}."
            )
    fresh = [u for u in uuids if u not in known]
    datasets = {str(d.pk): d for d in Dataset.objects.visible_to(access).filter(pk__in=fresh)}
    Data.objects.bulk_create(
        [Data(project=project, owner=access.user, uuid=u, dataset=datasets.get(u)) for u in fresh]
    )
    # Read back for the primary keys (bulk_create does not set them on every database).
    by_uuid = {str(row.uuid): row for row in Data.objects.filter(project=project, uuid__in=uuids)}
    rows = [by_uuid[u] for u in uuids]
    links = [
        Data.problems.through(data_id=row.pk, problem_id=problem.pk)
        for row in rows
        for problem in problems
    ]
    Data.problems.through.objects.bulk_create(links)

    created = 0
    ordered = [str(u) for u in uuids]
    for problem in problems:
        held_out = set(problem.test_dataset)
        train = [u for u in ordered if u not in held_out]
        for algo in _locked_algos(problem):
            created += _append_learnuplets(algo, train)
    # Uplets created before these data (of these problems or others naming them) may run now.
    dispatch.dispatch_waiting(project_id=project.pk, data_uuids=ordered)
    return rows, created


def _lock_problems(problems: Iterable[Problem]) -> None:
    """Serialise the requests that register data for, or ask predictions of, these problems
    (PostgreSQL; SQLite serialises writers anyway): each then sees the other's rows, so an uplet
    waiting for data is never missed by both."""
    ids = sorted(p.pk for p in problems)
    list(Problem.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk"))


def _locked_algos(problem: Problem) -> list[Algo]:
    return list(Algo.objects.select_for_update().filter(problem=problem).order_by("id"))


def _append_learnuplets(algo: Algo, train: Sequence[str]) -> int:
    """One `todo` learnuplet per batch of `size_train_dataset` data, ranks after the last one.
    The first one gets its `model_start` at once (see the module) and is dispatched."""
    problem = algo.problem
    size = problem.size_train_dataset
    batches = [list(train[i : i + size]) for i in range(0, len(train), size)]
    if not batches:
        return 0
    last = algo.learnuplets.order_by("-rank").values_list("rank", flat=True).first()
    first_rank = 0 if last is None else last + 1
    start = _start_model(algo)
    Learnuplet.objects.bulk_create(
        [
            Learnuplet(
                project_id=algo.project_id,
                owner_id=algo.owner_id,
                uuid=uuidlib.uuid4(),
                problem=problem,
                workflow=problem.workflow,
                algo=algo,
                rank=first_rank + i,
                model_start=start if i == 0 else None,
                model_end=uuidlib.uuid4(),
                train_data=batch,
                test_data=list(problem.test_dataset),
            )
            for i, batch in enumerate(batches)
        ]
    )
    first = Learnuplet.objects.select_related("algo", "problem").get(algo=algo, rank=first_rank)
    dispatch.dispatch_learnuplet(first)
    return len(batches)


def _start_model(algo: Algo):
    """Where the next rank of `algo` starts: the best done model so far that still exists, else
    the algo itself."""
    best = selectors.best_learnuplet(algo=algo)
    return best.model_end if best is not None else algo.uuid


def _advance(algo: Algo, finished: Learnuplet) -> Learnuplet | None:
    """Rank r finished (done or failed): rank r+1, while still `todo`, starts from the best done
    model so far. Dispatches it when its `model_start` changed. Returns it when it did."""
    following = (
        Learnuplet.objects.select_related("algo", "problem")
        .filter(algo=algo, rank=finished.rank + 1, status=UpletStatus.TODO)
        .first()
    )
    if following is None:
        return None
    start = _start_model(algo)
    if following.model_start == start:
        return None
    updated = Learnuplet.objects.filter(pk=following.pk, status=UpletStatus.TODO).update(
        model_start=start, updated_at=timezone.now()
    )
    if not updated:  # claimed meanwhile: it runs from what it was given
        return None
    following.model_start = start
    dispatch.dispatch_learnuplet(following)
    return following


# --- predictions ---------------------------------------------------------------------------------


@transaction.atomic
def prediction_create(
    *, access: ProjectAccess, data: str | Sequence[str], problem_uuid: str
) -> Preduplet:
    """A `todo` preduplet running the problem's best existing model on `data` (one data uuid, as
    upstream's later version and the Go client send it, or a list of them), stored as given."""
    problem = Problem.objects.visible_to(access).filter(uuid=problem_uuid).first()
    if problem is None:
        raise ValidationFailed.for_field("problem", f"problem {problem_uuid} does not exist.")
    _lock_problems([problem])
    best = selectors.best_learnuplet(problem=problem)
    if best is None:
        raise ValidationFailed.for_field(
            "problem",
            f"no trained model is available for problem {problem_uuid} (none is done yet, or "
            "the models were deleted).",
        )
    preduplet = Preduplet.objects.create(
        project=access.project,
        owner=access.user,
        uuid=uuidlib.uuid4(),
        problem=problem,
        workflow=problem.workflow,
        model=best.model_end,
        data=data if isinstance(data, str) else list(data),
    )
    dispatch.dispatch_preduplet(preduplet)
    return preduplet


# --- the status machine --------------------------------------------------------------------------


def uplet_claim(
    *, uplet: Learnuplet | Preduplet, worker: str | None, account: User | None
) -> Learnuplet | Preduplet:
    """`todo -> pending` for one worker, atomically: of two racing claims exactly one wins, the
    other raises Conflict. A learnuplet whose `model_start` is not known yet (an earlier rank is
    still running) cannot be claimed."""
    model = type(uplet)
    claimable = model.objects.filter(pk=uplet.pk, status=UpletStatus.TODO)
    if model is Learnuplet:
        claimable = claimable.filter(model_start__isnull=False)
    now = timezone.now()
    if not claimable.update(
        status=UpletStatus.PENDING,
        worker=worker,
        claimed_by=account,
        claimed_at=now,
        updated_at=now,
    ):
        uplet.refresh_from_db()
        kind = model._meta.model_name
        if uplet.status == UpletStatus.TODO:
            raise Conflict(
                f"{kind} {uplet.uuid} is waiting for an earlier rank to finish; not ready."
            )
        raise Conflict(
            f"worker not set for {kind} {uplet.uuid}: it is {uplet.status}, not todo "
            "(another worker may have taken it)."
        )
    uplet.refresh_from_db()
    return uplet


def _finish(
    uplet: Learnuplet | Preduplet, *, account: User | None, as_admin: bool, fields: dict[str, Any]
) -> None:
    """`pending -> done | failed`, or `failed -> done` (a late success report: upstream accepts
    it and its test suite relies on it), conditional on the claim (same account unless
    `as_admin`). `done` is final."""
    model = type(uplet)
    now = timezone.now()
    sources = [UpletStatus.PENDING]
    if fields.get("status") == UpletStatus.DONE:
        sources.append(UpletStatus.FAILED)
    finishing = model.objects.filter(pk=uplet.pk, status__in=sources)
    if not as_admin:
        finishing = finishing.filter(claimed_by=account)
    if not finishing.update(timestamp_done=now, updated_at=now, **fields):
        uplet.refresh_from_db()
        kind = model._meta.model_name
        if uplet.status in sources:
            raise Conflict(f"no update of {kind} {uplet.uuid}: another worker took it.")
        raise Conflict(f"no update of {kind} {uplet.uuid}: it is {uplet.status}, not pending.")
    uplet.refresh_from_db()


def _finished_fields(status: str, reason: str) -> dict[str, Any]:
    """The status and its reason (a late `done` clears the reason of the failure before it)."""
    return {
        "status": status,
        "failure_reason": reason[: dispatch.REASON_MAX] if status == UpletStatus.FAILED else "",
    }


@transaction.atomic
def learnuplet_report(
    *,
    uplet: Learnuplet,
    account: User | None,
    status: str,
    perf: float | None = None,
    train_perf: Any = None,
    test_perf: Any = None,
    as_admin: bool = False,
    reason: str = "",
) -> Learnuplet:
    """The result of a learnuplet (learndone): store the perfs of a done one (or why a failed
    one failed, when the caller knows), then let the next rank of its algo start from the best
    model so far."""
    if status not in FINISHED_STATUSES:
        raise ValidationFailed.for_field("status", "must be done or failed.")
    if status == UpletStatus.DONE and perf is None:
        raise ValidationFailed.for_field("perf", "is required when status is done.")
    # Serialise the chain updates of one algo (PostgreSQL; SQLite serialises writers anyway).
    algo = Algo.objects.select_for_update().select_related("problem").get(pk=uplet.algo_id)
    fields = _finished_fields(status, reason)
    if status == UpletStatus.DONE:
        fields.update(perf=perf, train_perf=train_perf, test_perf=test_perf)
    _finish(uplet, account=account, as_admin=as_admin, fields=fields)
    _advance(algo, uplet)
    return uplet


@transaction.atomic
def preduplet_report(
    *,
    uplet: Preduplet,
    account: User | None,
    status: str,
    prediction_storage_uuid: str | None = None,
    as_admin: bool = False,
    reason: str = "",
) -> Preduplet:
    """The result of a preduplet (preddone); `reason`: why a failed one failed, when known."""
    if status not in FINISHED_STATUSES:
        raise ValidationFailed.for_field("status", "must be done or failed.")
    if status == UpletStatus.DONE and prediction_storage_uuid is None:
        raise ValidationFailed.for_field(
            "prediction_storage_uuid", "is required when status is done."
        )
    fields = _finished_fields(status, reason)
    if prediction_storage_uuid is not None:
        fields["prediction_storage_uuid"] = prediction_storage_uuid
    _finish(uplet, account=account, as_admin=as_admin, fields=fields)
    return uplet
