"""Reads of the console: the dashboard and the lists it links to, always limited to the
projects the caller administers (`access.scope`); per-object pages read through the apps' own
selectors once `console_access` resolved the project."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db.models import Count, Max
from django.utils import timezone

from apps.console.access import console_project_ids, scope
from apps.core.conf import number_setting

logger = logging.getLogger(__name__)

LATEST = 10
FAILED_WINDOW = timedelta(days=1)


def _projects(user, project_id: str | None):
    """(projects the caller administers, the selected project id or None)."""
    from apps.accounts.models import Project

    projects = scope(Project.objects.order_by("name"), user, field="pk")
    selected = None
    if project_id and projects.filter(pk=str(project_id)).exists():
        selected = str(project_id)
    return list(projects.values("id", "name")[:500]), selected


def _limit(queryset, user, selected: str | None):
    queryset = scope(queryset, user)
    return queryset.filter(project_id=selected) if selected else queryset


def gpu_memory() -> dict[str, dict[str, Any]]:
    """GPU memory by host id ("gpu-0") from NVML (through `apps.system`); {} without GPUs."""
    from apps.system.selectors import devices

    try:
        listed = devices().get("devices", [])
    except Exception:  # no driver, NVML hiccup: the dashboard still answers
        logger.warning("device listing failed", exc_info=True)
        return {}
    out = {}
    for device in listed:
        if device.get("type") != "gpu":
            continue
        total, free = device.get("memory_total_mb"), device.get("memory_free_mb")
        used = total - free if isinstance(total, int) and isinstance(free, int) else None
        out[str(device.get("id", "")).replace(":", "-")] = {
            "total_mb": total,
            "free_mb": free,
            "used_mb": used,
            "used_percent": round(100 * used / total) if used is not None and total else None,
        }
    return out


def host_queues(*, user, selected: str | None = None) -> list[dict[str, Any]]:
    """Every host with the caller's queued/active tasks on its queue, the newest heartbeat of an
    active task there (the sign of life of the worker that runs it) and its GPU memory."""
    from apps.clusters.selectors import host_list
    from apps.tasks.models import Task, TaskState

    stale_s = number_setting("TASK_HEARTBEAT_STALE_S")
    rows = (
        _limit(Task.objects.all(), user, selected)
        .filter(state__in=[TaskState.QUEUED, TaskState.ACTIVE])
        .values("queue", "state")
        .annotate(n=Count("id"), beat=Max("heartbeat_at"))
        .order_by()
    )
    counts: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = counts.setdefault(row["queue"], {"queued": 0, "active": 0, "heartbeat": None})
        entry[row["state"]] = row["n"]
        if row["state"] == TaskState.ACTIVE and row["beat"] is not None:
            entry["heartbeat"] = row["beat"]
    memory = gpu_memory()
    now = timezone.now()
    hosts = []
    known = set()
    for host in host_list():
        known.add(host.id)
        hosts.append(_host_row(host.id, host.kind, host.name, host.state, counts, memory, now))
    for queue in sorted(set(counts) - known):  # a queue whose host row is gone
        hosts.append(_host_row(queue, "", "", "unknown", counts, memory, now))
    for row in hosts:
        age = row["heartbeat_age_s"]
        row["heartbeat_stale"] = age is not None and age > stale_s
    return hosts


def _host_row(host_id, kind, name, state, counts, memory, now) -> dict[str, Any]:
    entry = counts.get(host_id, {"queued": 0, "active": 0, "heartbeat": None})
    beat = entry["heartbeat"]
    return {
        "id": host_id,
        "kind": kind,
        "name": name,
        "state": state,
        "queued": entry["queued"],
        "active": entry["active"],
        "heartbeat": beat,
        "heartbeat_age_s": (now - beat).total_seconds() if beat else None,
        "gpu": memory.get(host_id),
    }


def dashboard(*, user, project_id: str | None = None) -> dict[str, Any]:
    """Everything the admin index shows, for the projects `user` administers (one of them when
    `project_id` names one of those)."""
    from apps.datasets.models import Dataset
    from apps.mlbackend.models import LabelStudioBackend
    from apps.tasks.models import PENDING_STATES, Task, TaskState
    from apps.training.models import Evaluation, Run

    projects, selected = _projects(user, project_id)
    since = timezone.now() - FAILED_WINDOW
    tasks = _limit(Task.objects.select_related("project"), user, selected)
    return {
        "all_projects": console_project_ids(user) is None,
        "projects": projects,
        "selected_project": selected,
        "hosts": host_queues(user=user, selected=selected),
        "runs": list(
            _limit(
                Run.objects.select_related("task", "experiment", "project"), user, selected
            ).order_by("-created_at", "pk")[:LATEST]
        ),
        "failed_tasks": list(
            tasks.filter(state=TaskState.FAILED, finished_at__gte=since).order_by("-finished_at")[
                :50
            ]
        ),
        "pending_tasks": list(
            tasks.filter(state__in=PENDING_STATES).order_by("-created_at", "pk")[:LATEST]
        ),
        "evaluations": list(
            _limit(
                Evaluation.objects.select_related("task", "run", "project"), user, selected
            ).order_by("-created_at", "pk")[:LATEST]
        ),
        "datasets": list(
            _limit(Dataset.objects.select_related("project"), user, selected).order_by(
                "-created_at", "pk"
            )[:LATEST]
        ),
        "backends": list(
            _limit(LabelStudioBackend.objects.select_related("project"), user, selected).order_by(
                "-created_at", "pk"
            )[:LATEST]
        ),
    }


# Names an epoch's metrics have had in stored `epoch_end` events -> the console's names.
_EPOCH_NAMES = {
    "loss": "loss",
    "train_loss": "loss",
    "accuracy": "accuracy",
    "train_accuracy": "accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "seconds": "seconds",
    "duration_s": "seconds",
    "epoch_time": "seconds",
}


def run_history(*, run) -> list[dict[str, Any]]:
    """A run's epochs, oldest first, as {epoch, loss, accuracy, val_loss, val_accuracy,
    seconds}, read from its task's stored `epoch_end` events (flat, or with a `metrics` dict);
    an epoch recorded twice keeps the later record."""
    from apps.tasks.models import TaskEvent

    epochs: dict[int, dict[str, Any]] = {}
    if run.task_id is None:
        return []
    rows = TaskEvent.objects.filter(task_id=run.task_id, kind="epoch_end").order_by("seq")
    for data in rows.values_list("data", flat=True).iterator():
        if not isinstance(data, dict) or not isinstance(data.get("epoch"), int):
            continue
        flat = {**data, **(data["metrics"] if isinstance(data.get("metrics"), dict) else {})}
        epoch = {"epoch": data["epoch"]}
        for key, name in _EPOCH_NAMES.items():
            value = flat.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                epoch.setdefault(name, value)
        epochs[data["epoch"]] = epoch
    return [epochs[k] for k in sorted(epochs)]
