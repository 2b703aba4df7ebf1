"""Reads of the marketplace: collections with the protocol's equality filters, the best model of
an algo or problem, and the Orchard datasets behind data uuids."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.db.models import Exists, OuterRef, QuerySet

from apps.core.exceptions import ValidationFailed
from apps.marketplace.models import Algo, Data, Learnuplet, Preduplet, Problem, UpletStatus

if TYPE_CHECKING:
    from apps.core.tenancy import ProjectAccess


# --- collections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A filterable document field: how a query-string value is parsed and where it is stored.

    `kind`: uuid, int, float, str, status, timestamp, or list (the document holds a list of
    uuids; equality means "contains", as in the upstream MongoDB).
    """

    kind: str
    path: str


@dataclass(frozen=True)
class Collection:
    name: str
    model: type
    fields: dict[str, Field]
    related: tuple[str, ...] = ()
    prefetch: tuple[str, ...] = ()


_UPLET_FIELDS = {
    "uuid": Field("uuid", "uuid"),
    "problem": Field("uuid", "problem__uuid"),
    "workflow": Field("uuid", "workflow"),
    "worker": Field("uuid", "worker"),
    "status": Field("status", "status"),
    "timestamp_done": Field("timestamp", "timestamp_done"),
}

COLLECTIONS: dict[str, Collection] = {
    "problem": Collection(
        "problem",
        Problem,
        {
            "uuid": Field("uuid", "uuid"),
            "workflow": Field("uuid", "workflow"),
            "test_dataset": Field("list", "test_dataset"),
            "size_train_dataset": Field("int", "size_train_dataset"),
            "timestamp_upload": Field("timestamp", "created_at"),
        },
    ),
    "algo": Collection(
        "algo",
        Algo,
        {
            "uuid": Field("uuid", "uuid"),
            "name": Field("str", "name"),
            "problem": Field("uuid", "problem__uuid"),
            "timestamp_upload": Field("timestamp", "created_at"),
        },
        related=("problem",),
    ),
    "data": Collection(
        "data",
        Data,
        {
            "uuid": Field("uuid", "uuid"),
            "problems": Field("uuid", "problems__uuid"),
            "timestamp_upload": Field("timestamp", "created_at"),
        },
        prefetch=("problems",),
    ),
    "learnuplet": Collection(
        "learnuplet",
        Learnuplet,
        {
            **_UPLET_FIELDS,
            "algo": Field("uuid", "algo__uuid"),
            "rank": Field("int", "rank"),
            "model_start": Field("uuid", "model_start"),
            "model_end": Field("uuid", "model_end"),
            "train_data": Field("list", "train_data"),
            "test_data": Field("list", "test_data"),
            "perf": Field("float", "perf"),
            "timestamp_creation": Field("timestamp", "created_at"),
        },
        related=("problem", "algo"),
    ),
    "preduplet": Collection(
        "preduplet",
        Preduplet,
        {
            **_UPLET_FIELDS,
            "model": Field("uuid", "model"),
            "data": Field("list", "data"),
            "prediction_storage_uuid": Field("uuid", "prediction_storage_uuid"),
            "timestamp_request": Field("timestamp", "created_at"),
        },
        related=("problem",),
    ),
}


def _parse(name: str, field: Field, raw: str):
    try:
        if field.kind in ("uuid", "list"):
            return str(uuidlib.UUID(raw))
        if field.kind == "int":
            return int(raw)
        if field.kind == "float":
            return float(raw)
        if field.kind == "timestamp":
            return datetime.fromtimestamp(int(raw), tz=UTC)
    except (ValueError, OverflowError, OSError):
        expected = {"list": "uuid", "timestamp": "int"}.get(field.kind, field.kind)
        raise ValidationFailed.for_field(name, f"must be a {expected}.") from None
    if field.kind == "status" and raw not in UpletStatus.values:
        raise ValidationFailed.for_field(name, f"must be one of {', '.join(UpletStatus.values)}.")
    return raw


def collection_list(*, access: ProjectAccess, collection: Collection, filters) -> list:
    """The visible documents of a collection matching every `field=value` of `filters` (a
    QueryDict or dict); an unknown field or a malformed value raises ValidationFailed."""
    qs: QuerySet = collection.model.objects.visible_to(access)
    if collection.related:
        qs = qs.select_related(*collection.related)
    if collection.prefetch:
        qs = qs.prefetch_related(*collection.prefetch)
    contains: list[tuple[str, str]] = []
    for name in filters:
        field = collection.fields.get(name)
        if field is None:
            raise ValidationFailed.for_field(
                name, f"is not a field of {collection.name} documents."
            )
        value = _parse(name, field, filters.get(name))
        if field.kind == "list":
            contains.append((field.path, value))
        elif field.kind == "timestamp":
            qs = qs.filter(
                **{f"{field.path}__gte": value, f"{field.path}__lt": value + timedelta(seconds=1)}
            )
        else:
            qs = qs.filter(**{field.path: value})
    rows = list(qs.order_by("created_at", "id").distinct())
    # List fields hold JSON lists; "contains" is checked here so that SQLite serves it too.
    for path, value in contains:
        rows = [r for r in rows if value in _as_list(getattr(r, path))]
    return rows


def _as_list(value) -> list:
    """A list field's value (a preduplet's `data` may be one uuid string)."""
    if isinstance(value, str):
        return [value]
    return list(value or [])


def document_get(*, access: ProjectAccess, collection: Collection, uuid: str):
    """One visible document by its uuid, or NotFound (also for a malformed uuid)."""
    qs = collection.model.objects.all()
    if collection.related:
        qs = qs.select_related(*collection.related)
    if collection.prefetch:
        qs = qs.prefetch_related(*collection.prefetch)
    return qs.get_visible(access, uuid=uuid)


# --- the learnuplet rules ------------------------------------------------------------------------


def problem_data_uuids(problem: Problem) -> list[str]:
    """The uuids of a problem's data, in registration order."""
    rows = Data.objects.filter(problems=problem).order_by("created_at", "id")
    return [str(u) for u in rows.values_list("uuid", flat=True)]


def trained_by_builtin(uplet: Learnuplet) -> bool:
    """Whether the built-in compute trained this learnuplet (its job claims it with no account and
    its task id as worker): its model is then the Checkpoint `model_end`. A model an HTTP worker
    trained is kept by that worker, out of Orchard's sight."""
    return (
        uplet.claimed_by_id is None and uplet.task_id is not None and uplet.worker == uplet.task_id
    )


def best_learnuplet(*, algo: Algo | None = None, problem: Problem | None = None):
    """The done learnuplet with the highest perf (ties: the highest rank, i.e. the model trained
    on the most data) whose model still exists, of one algo or of every algo of a problem; None
    when there is none. A model the built-in compute trained exists while its Checkpoint does
    (a project member may delete it); an HTTP worker's model is taken to exist."""
    from apps.clusters.models import Checkpoint

    qs = Learnuplet.objects.filter(status=UpletStatus.DONE, perf__isnull=False)
    if algo is not None:
        qs = qs.filter(algo=algo)
    if problem is not None:
        qs = qs.filter(problem=problem)
    stored = Checkpoint.objects.filter(pk=OuterRef("model_end"), project_id=OuterRef("project_id"))
    qs = qs.annotate(stored=Exists(stored)).order_by("-perf", "-rank", "-id")
    # Nearly always the first row: deleted models are few.
    for uplet in qs.iterator(chunk_size=20):
        if uplet.stored or not trained_by_builtin(uplet):
            return uplet
    return None


def model_deleted(*, project_id, model) -> bool:
    """Whether `model` (a preduplet's) is a model the built-in compute trained whose Checkpoint
    has been deleted since: no worker can run a prediction with it any more."""
    from apps.clusters.models import Checkpoint

    source = Learnuplet.objects.filter(project_id=project_id, model_end=model).first()
    if source is None or not trained_by_builtin(source):
        return False
    return not Checkpoint.objects.filter(project_id=project_id, pk=model).exists()


def datasets_for(*, project_id: str, uuids) -> dict | None:
    """{data uuid: ready Orchard dataset} for registered data of the project, or None when any
    uuid is not an Orchard dataset (the built-in compute cannot read it)."""
    from apps.datasets.models import Dataset

    wanted = [str(u) for u in uuids]
    if not wanted:
        return None
    rows = Data.objects.filter(
        project_id=project_id,
        uuid__in=wanted,
        dataset__isnull=False,
        dataset__status=Dataset.Status.READY,
    ).select_related("dataset")
    found = {str(row.uuid): row.dataset for row in rows}
    if any(u not in found for u in wanted):
        return None
    return {u: found[u] for u in wanted}
