"""Writes of clusters, checkpoints, hosts, the tasks of clusters and their request results."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import QuerySet

from apps.clusters import directio, runtime
from apps.clusters.models import (
    Checkpoint,
    Cluster,
    ClusterMode,
    Host,
    HostKind,
    HostState,
    RequestResult,
)
from apps.core.events import group_name, publish
from apps.core.exceptions import Conflict, NotFound, ValidationFailed
from apps.core.storage import project_local_dir
from apps.core.tenancy import require_edit

if TYPE_CHECKING:
    from apps.accounts.models import Project, User
    from apps.core.tenancy import ProjectAccess
    from apps.datasets.models import Dataset
    from apps.tasks.models import Task

logger = logging.getLogger(__name__)

CPU_HOST_ID = "cpu"
# The target_type of a cluster's tasks (see apps.tasks.models.target_of).
CLUSTER_TARGET = Cluster._meta.label_lower


# --- hosts ---------------------------------------------------------------------------------------


def host_id_for_device(device_id: str) -> str:
    """`ml.devices` ids ("cpu", "gpu:0") -> host and queue ids ("cpu", "gpu-0")."""
    return device_id.replace(":", "-")


def host_ensure_cpu() -> Host:
    """The CPU host always exists (every cluster starts on it)."""
    host, _ = Host.objects.get_or_create(
        pk=CPU_HOST_ID, defaults={"kind": HostKind.CPU, "name": "CPU"}
    )
    return host


@transaction.atomic
def host_refresh() -> list[Host]:
    """Synchronise the Host rows with the devices of this machine (`ml.devices`, torch).

    Devices that disappeared are kept but marked unavailable (clusters may still point at them).
    """
    devices: list[dict[str, Any]]
    try:
        from ml.devices import list_devices

        devices = list(list_devices().get("devices", []))
    except Exception:  # no inventory module or NVML: fall back to torch
        logger.warning("device inventory failed; falling back to torch", exc_info=True)
        devices = [{"id": "cpu", "kind": "cpu", "name": "CPU"}]
        try:
            import torch

            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                devices.append(
                    {"id": f"gpu:{i}", "name": props.name, "memory_total": props.total_memory}
                )
        except Exception:
            logger.debug("torch.cuda unavailable", exc_info=True)
    seen = set()
    for device in devices:
        host_id = host_id_for_device(str(device.get("id", "")))
        if not host_id:
            continue
        kind = HostKind.CPU if host_id == CPU_HOST_ID else HostKind.GPU
        memory = device.get("memory_total", device.get("memory_bytes"))
        if memory is None and isinstance(device.get("memory_total_mb"), int | float):
            memory = int(device["memory_total_mb"]) * 1024 * 1024
        Host.objects.update_or_create(
            pk=host_id,
            defaults={
                "kind": kind,
                "name": str(device.get("name") or host_id)[:200],
                "memory_bytes": int(memory) if isinstance(memory, int | float) else None,
                "state": HostState.AVAILABLE,
                "details": {k: v for k, v in device.items() if _jsonable(v)},
            },
        )
        seen.add(host_id)
    Host.objects.exclude(pk__in=seen | {CPU_HOST_ID}).update(state=HostState.UNAVAILABLE)
    host_ensure_cpu()
    return list(Host.objects.all())


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None))


# --- rights --------------------------------------------------------------------------------------

# Task kinds that only read their cluster's weights (inference). Every other kind with a cluster
# writes them (training), which is changing the cluster.
CLUSTER_READ_ONLY_TASK_KINDS = frozenset({"request"})
TRAIN_DENIED = "Only the owner or a project admin may train this cluster."


def require_task_rights(*, access: ProjectAccess, kind: str, cluster: Cluster | None) -> None:
    """Every surface that starts a task on a cluster calls this before `task_create`: any task
    needs a writing role; a task that writes the cluster's weights needs edit rights on it."""
    access.require_write()
    if cluster is not None and kind not in CLUSTER_READ_ONLY_TASK_KINDS:
        # The one edit check on an object given rather than fetched (tenancy's `require_edit`):
        # a retried task's cluster need not be one the caller sees, and that answers 403
        # TRAIN_DENIED, not the 404 a fetch through `get_visible(for_edit=True)` would give.
        require_edit(access, cluster, TRAIN_DENIED)


# --- clusters ------------------------------------------------------------------------------------


def template_shape(template) -> dict[str, Any]:
    """The shape summary stored on a cluster (and in its checkpoints)."""
    return {
        "inputs": dict(template.inputs),
        "outputs": dict(template.outputs),
        "bricks": [
            {
                "position": b.position_text,
                "kind": b.kind,
                "name": b.name,
                "number_of_neurons": b.number_of_neurons,
            }
            for b in template.bricks
        ],
        "parameters": template.parameter_count(),
    }


def parse_template_or_fail(template_text: str):
    """Parse a template; a TemplateError becomes ValidationFailed naming the line."""
    from ml.templates import TemplateError, parse_template

    if not isinstance(template_text, str) or not template_text.strip():
        raise ValidationFailed.for_field("template", "The template is empty.")
    try:
        return parse_template(template_text)
    except TemplateError as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        raise ValidationFailed(
            f"template: {where}{exc.message}",
            details={"template": [f"{where}{exc.message}"], "line": exc.line},
        ) from None


@transaction.atomic
def cluster_create(
    *,
    project: Project,
    actor: User | None,
    name: str,
    template_text: str,
    seed: int | None = None,
    visibility: str | None = None,
) -> Cluster:
    """Create a cluster from Hanami template text (weights are initialised lazily from `seed`)."""
    template = parse_template_or_fail(template_text)
    fields: dict[str, Any] = {}
    if visibility:
        fields["visibility"] = visibility
    return Cluster.objects.create(
        project=project,
        owner=actor,
        name=name,
        template=template_text,
        shape=template_shape(template),
        source=Cluster.SOURCE_TEMPLATE,
        config={"seed": seed if seed is not None else uuid.uuid4().int % (2**31)},
        host=host_ensure_cpu(),
        **fields,
    )


@transaction.atomic
def cluster_create_from_architecture(
    *,
    project: Project,
    actor: User | None,
    name: str,
    architecture: str,
    input_shape: list[int],
    num_classes: int,
    seed: int | None = None,
) -> Cluster:
    """Create a cluster from a named architecture of `ml.architectures` (the studio's models)."""
    config = {
        "seed": seed if seed is not None else uuid.uuid4().int % (2**31),
        "input_shape": [int(v) for v in input_shape],
        "num_classes": int(num_classes),
    }
    try:
        model = runtime.build_module(source=architecture, template="", config=config)
    except (ValueError, KeyError) as exc:
        raise ValidationFailed.for_field("architecture", str(exc)) from None
    size = 1
    for v in input_shape:
        size *= int(v)
    return Cluster.objects.create(
        project=project,
        owner=actor,
        name=name,
        source=architecture,
        shape={
            "inputs": {"input": size},
            "outputs": {"output": int(num_classes)},
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        config=config,
        host=host_ensure_cpu(),
    )


def _active_tasks(cluster: Cluster):
    from apps.tasks.models import PENDING_STATES

    return cluster_tasks(cluster).filter(state__in=PENDING_STATES)


def cluster_delete(*, cluster: Cluster) -> None:
    """Delete a cluster and its weights; its queued/active tasks are aborted first."""
    from apps.tasks.services import task_abort

    for task in _active_tasks(cluster):
        task_abort(task=task)
    directio.runtime_close(str(cluster.pk), write_back=False)
    if cluster.mode == ClusterMode.DIRECT:
        _announce_direct_closed(cluster)
    directory = runtime.cluster_dir(cluster)
    cluster.delete()
    transaction.on_commit(lambda: _remove_tree(directory))


def cluster_set_mode(*, cluster: Cluster, mode: str) -> Cluster:
    """Switch between TASK and DIRECT mode; DIRECT needs a cluster with no queued/active task."""
    if mode not in ClusterMode.values:
        raise ValidationFailed.for_field("mode", f"Must be one of {', '.join(ClusterMode.values)}.")
    if mode == ClusterMode.TASK:
        # Write back what direct io trained before any task can load the weights, and before
        # taking the row: a write-back in flight holds the runtime's lock while it bumps the
        # row's version, so closing under the row lock waited on it forever (a deadlock, seen
        # as a 20 s stall and "database is locked" on SQLite).
        directio.runtime_close(str(cluster.pk))
    with transaction.atomic():
        return _set_mode(cluster, mode)


def _set_mode(cluster: Cluster, mode: str) -> Cluster:
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    if mode == ClusterMode.DIRECT and _active_tasks(cluster).exists():
        raise Conflict("The cluster has queued or active tasks; wait or abort them first.")
    if mode == ClusterMode.TASK:
        directio.runtime_close(str(cluster.pk))  # one a socket of this process opened meanwhile
    if cluster.mode != mode:
        cluster.mode = mode
        cluster.save(update_fields=["mode", "updated_at"])
        if mode == ClusterMode.TASK:
            _announce_direct_closed(cluster)
    if mode == ClusterMode.DIRECT:  # loaded now, not inside the first socket's handshake
        pk = str(cluster.pk)
        transaction.on_commit(lambda: directio.warm_in_background([pk]))
    return cluster


def _announce_direct_closed(cluster: Cluster) -> None:
    """Tell direct-io sockets of every process that the cluster left DIRECT mode."""
    group = group_name("cluster", cluster.pk)
    event = {"type": "directio.closed", "cluster_id": str(cluster.pk)}
    transaction.on_commit(lambda: publish(group, event))


@transaction.atomic
def cluster_switch_host(*, cluster: Cluster, host_id: str) -> Cluster:
    """Move a cluster to another host; its next tasks go to that host's queue."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None and host_id == CPU_HOST_ID:
        host = host_ensure_cpu()
    if host is None:
        raise NotFound("Host not found.")
    if host.state != HostState.AVAILABLE:
        raise Conflict(f"Host {host.pk} is not available.")
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    if _active_tasks(cluster).filter(state="active").exists():
        raise Conflict("A task of this cluster is running; switch hosts when it has finished.")
    cluster.host = host
    cluster.save(update_fields=["host", "updated_at"])
    return cluster


# --- tasks of clusters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterKind:
    """What a task kind that works on a cluster needs besides its params (registered by the app
    that owns the kind, next to its engine registration)."""

    needs_dataset: bool = False
    # validate(params=..., cluster=..., dataset=...) raises ValidationFailed before the row exists.
    validate: Callable[..., None] | None = None


_cluster_kinds: dict[str, ClusterKind] = {}


def register_cluster_kind(
    kind: str, *, needs_dataset: bool = False, validate: Callable[..., None] | None = None
) -> None:
    """Declare that tasks of `kind` work on a cluster (a dataset too with `needs_dataset`)."""
    _cluster_kinds[kind] = ClusterKind(needs_dataset, validate)


def cluster_tasks(cluster: Cluster) -> QuerySet[Task]:
    """Every task of the cluster (its target), in no particular order."""
    from apps.tasks.models import Task, target_of

    return Task.objects.filter(**target_of(cluster))


@transaction.atomic
def cluster_task_create(
    *,
    project: Project,
    actor: User | None,
    kind: str,
    name: str,
    cluster: Cluster | None,
    dataset: Dataset | None = None,
    params: dict[str, Any] | None = None,
    visibility: str | None = None,
) -> Task:
    """Submit a task of `cluster`: every surface that starts one goes through here.

    It runs on the cluster's host after the cluster's earlier tasks; a cluster in DIRECT mode
    takes none (Conflict). `dataset`, when the kind reads one, is recorded with the task
    (`apps.datasets`): deleting it later keeps the task's history.
    """
    from apps.datasets.services import dataset_check_usable, task_dataset_link
    from apps.tasks.services import task_create

    entry = _cluster_kinds.get(kind, ClusterKind())
    if cluster is None:
        raise ValidationFailed.for_field("cluster_id", "This kind of task needs a cluster.")
    if entry.needs_dataset and dataset is None:
        raise ValidationFailed.for_field("dataset_id", "This kind of task needs a dataset.")
    if cluster.project_id != project.pk:
        raise ValidationFailed.for_field("cluster_id", "Not found in this project.")
    if dataset is not None:
        dataset_check_usable(project=project, dataset=dataset)
    params = dict(params or {})
    if entry.validate is not None:
        entry.validate(params=params, cluster=cluster, dataset=dataset)
    # Lock the cluster row: the sequence numbers of one cluster are handed out one at a time.
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    if cluster.mode == ClusterMode.DIRECT:
        raise Conflict("The cluster is in DIRECT mode; switch it to TASK mode first.")
    task = task_create(
        project=project,
        actor=actor,
        kind=kind,
        name=name,
        target=cluster,
        params=params,
        queue=cluster.host_id or CPU_HOST_ID,
        visibility=visibility,
    )
    if dataset is not None:
        task_dataset_link(task=task, dataset=dataset)
    return task


def host_queue_check(queue: str | None) -> str:
    """The host queue a task without a cluster names: "cpu" by default, else an available host
    (ValidationFailed otherwise)."""
    if queue in (None, CPU_HOST_ID):
        return CPU_HOST_ID
    if not Host.objects.filter(pk=queue, state=HostState.AVAILABLE).exists():
        raise ValidationFailed.for_field("queue", f"No available host {queue!r}.")
    return queue


def cluster_tasks_delete(sender, instance: Cluster, **kwargs) -> None:
    """A deleted cluster takes its tasks with it (a post_delete receiver, so that every way of
    deleting a cluster does it: the service, the admin, a project's deletion)."""
    cluster_tasks(instance).delete()


# --- checkpoints ---------------------------------------------------------------------------------


def checkpoint_path(project_id: str, checkpoint_id: str) -> Path:
    return project_local_dir(str(project_id), "checkpoints") / f"{checkpoint_id}.safetensors"


def checkpoint_save(*, cluster: Cluster, actor: User | None, name: str) -> Checkpoint:
    """Save the cluster's current weights as a named checkpoint of its project.

    In DIRECT mode, what direct io trained in this process is written back first.
    """
    loaded = directio.runtime_get(str(cluster.pk))
    if loaded is not None and loaded.flush():
        cluster.refresh_from_db(fields=["version", "updated_at"])
    model = runtime.cluster_load_model(cluster)
    checkpoint_id = uuid.uuid4()
    path = checkpoint_path(str(cluster.project_id), str(checkpoint_id))
    meta = runtime.cluster_metadata(cluster)
    size = runtime.write_state(path, model.state_dict(), meta)
    try:
        return Checkpoint.objects.create(
            id=checkpoint_id,
            project_id=cluster.project_id,
            owner=actor,
            name=name,
            cluster=cluster,
            file=path.name,
            size_bytes=size,
            metadata=meta,
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def checkpoint_restore(*, checkpoint: Checkpoint, cluster: Cluster) -> Cluster:
    """Load a checkpoint's weights into `cluster` (same project, compatible shape).

    A parameter whose name or shape does not match answers ValidationFailed naming it.
    """
    from ml.checkpoints import CheckpointMismatch, load_compatible

    if checkpoint.project_id != cluster.project_id:
        raise NotFound("Checkpoint not found.")
    if cluster.mode == ClusterMode.DIRECT:
        raise Conflict("The cluster is in DIRECT mode; switch it to TASK mode first.")
    if _active_tasks(cluster).filter(state="active").exists():
        raise Conflict("A task of this cluster is running; restore when it has finished.")
    path = checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk))
    if not path.exists():
        raise Conflict("The checkpoint's file is missing.")
    state, _meta = runtime.read_state(path)
    model = runtime.cluster_build_model(cluster)
    try:
        load_compatible(model, state)
    except CheckpointMismatch as exc:
        raise ValidationFailed(
            f"checkpoint_id: does not fit this cluster: {exc}",
            details={"checkpoint_id": [f"Does not fit this cluster: {exc}"]},
        ) from None
    runtime.cluster_store_weights(cluster, model)
    return cluster


def checkpoint_delete(*, checkpoint: Checkpoint) -> None:
    """Delete a checkpoint and its file."""
    path = checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk))
    checkpoint.delete()
    transaction.on_commit(lambda: path.unlink(missing_ok=True))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --- request results -----------------------------------------------------------------------------


def result_dir(*, project_id: str, result_id: str) -> Path:
    return project_local_dir(str(project_id), "results", str(result_id))


def request_result_store(
    *, task: Task, classes, logits=None, summary: dict[str, Any] | None = None, dataset_id=None
) -> RequestResult:
    """Store a request task's outputs (.npy) as a RequestResult with the task's id and name;
    `dataset_id` is the task's dataset (looked up when None). The row is inserted (three round
    trips, `update_or_create` took six), or updated when an earlier attempt stored one."""
    import numpy as np
    from django.db import IntegrityError
    from django.utils import timezone

    from apps.datasets.selectors import task_dataset_id

    directory = result_dir(project_id=str(task.project_id), result_id=str(task.pk))
    classes = np.asarray(classes, dtype=np.int64)
    _save_npy(directory / "classes.npy", classes)
    if logits is not None:
        _save_npy(directory / "logits.npy", np.asarray(logits, dtype=np.float32))
    fields = {
        "project_id": task.project_id,
        "owner_id": task.owner_id,
        "visibility": task.visibility,
        "name": task.name,
        "task": task,
        "cluster_id": task.target_id if task.target_type == CLUSTER_TARGET else None,
        "dataset_id": dataset_id or task_dataset_id(task),
        "num_samples": int(classes.shape[0]),
        "shape": list(classes.shape),
        "has_logits": logits is not None,
        "summary": summary or {},
    }
    try:
        with transaction.atomic():
            return RequestResult.objects.create(pk=task.pk, **fields)
    except IntegrityError:
        updated = RequestResult.objects.filter(pk=task.pk).update(
            **fields, updated_at=timezone.now()
        )
        if not updated:  # not a second attempt: another constraint failed
            raise
    return RequestResult.objects.get(pk=task.pk)


def _save_npy(path: Path, array) -> None:
    import io

    import numpy as np

    from apps.core.storage import atomic_write

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write(path, buffer.getvalue())


def request_result_classes(result: RequestResult):
    """The predicted class per sample (memory-mapped)."""
    import numpy as np

    path = result_dir(project_id=str(result.project_id), result_id=str(result.pk)) / "classes.npy"
    if not path.exists():
        raise Conflict("The result's outputs are missing.")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def request_result_check(*, result: RequestResult, dataset: Dataset) -> float:
    """Accuracy in percent of the result's predicted classes against the dataset's labels."""
    import numpy as np

    from apps.datasets.selectors import dataset_arrays

    if result.project_id != dataset.project_id:
        raise ValidationFailed.for_field("dataset_id", "Not found in this project.")
    predicted = np.asarray(request_result_classes(result))
    _inputs, labels = dataset_arrays(dataset)
    if labels is None:
        raise ValidationFailed.for_field("dataset_id", "The dataset has no labels.")
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot
        labels = labels.argmax(axis=1)
    if labels.shape[0] != predicted.shape[0]:
        raise ValidationFailed.for_field(
            "dataset_id",
            f"The dataset has {labels.shape[0]} samples, the result {predicted.shape[0]}.",
        )
    if predicted.shape[0] == 0:
        return 0.0
    try:
        from ml.metrics import accuracy

        fraction = float(accuracy(predicted, labels))
    except ImportError:
        fraction = float((predicted == labels.astype(np.int64)).mean())
    return round(100.0 * fraction, 4)


def request_result_delete(*, result: RequestResult) -> None:
    """Delete a result and its files."""
    import shutil

    directory = result_dir(project_id=str(result.project_id), result_id=str(result.pk))
    result.delete()
    transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))
