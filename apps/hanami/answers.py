"""The gateway's answers: plain dicts in the protocol's exact keys, order and types (the SDK and
its users read them as they come, so they are built by hand rather than by output serializers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from apps.accounts.models import Membership, Project, User
from apps.accounts.services import token_pair_for
from apps.datasets.models import Dataset
from apps.hanami.http import sdk_field_names

# Hanami knows no "failed": a failed task shows as aborted (with its error beside it).
_HANAMI_STATE = {"failed": "aborted"}
HOST_NAMESPACE = uuid.UUID("6f1d3c5e-3b9a-4f5e-9a57-0c2b7d1e8a40")


def table(header: list[str], rows: Iterable) -> dict:
    return {"header": header, "body": [list(r) for r in rows]}


def timestamp(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def host_uuid(host_id: str) -> str:
    """Hosts are named ("cpu", "gpu-0"); the protocol wants UUIDs: a stable one per name."""
    return str(uuid.uuid5(HOST_NAMESPACE, host_id))


def token_answer(user: User, project: Project | None = None) -> dict:
    pair = token_pair_for(user=user, project=project)
    return {
        "id": user.username,
        "name": user.name or user.username,
        "is_admin": user.is_superuser,
        "token": pair["access"],
    }


def membership_answers(memberships: Iterable[Membership]) -> list[dict]:
    return [
        {"project_id": m.project_id, "role": m.role, "is_project_admin": m.is_project_admin}
        for m in memberships
    ]


def user_answer(user: User, memberships: Iterable[Membership]) -> dict:
    return {
        "id": user.username,
        "name": user.name or user.username,
        # Orchard does not record who created a user.
        "creator_id": "",
        "is_admin": user.is_superuser,
        "projects": membership_answers(memberships),
    }


def project_answer(project: Project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "creator_id": project.created_by.username if project.created_by else "",
    }


def dataset_answer(dataset: Dataset) -> dict:
    inputs = 1
    for dim in dataset.input_shape or [0]:
        inputs *= int(dim)
    return {
        "uuid": str(dataset.pk),
        "name": dataset.name,
        "type": dataset.kind,
        "inputs": inputs,
        "outputs": dataset.num_classes or 0,
        "lines": dataset.num_samples,
        # Relative to the server's data directory: the absolute path is not the caller's business.
        "location": f"{dataset.project_id}/datasets/{dataset.pk}",
        "owner_id": dataset.owner.username if dataset.owner else "",
        "project_id": dataset.project_id,
        "visibility": dataset.visibility,
        "state": dataset.status,
        "error": dataset.error,
    }


def owned_answer(obj) -> dict:
    """A cluster, checkpoint or request result: its name, owner, project, uuid and visibility."""
    return {
        "name": obj.name,
        "owner_id": obj.owner.username if obj.owner else "",
        "project_id": obj.project_id,
        "uuid": str(obj.pk),
        "visibility": obj.visibility,
    }


def owned_rows(objects: Iterable) -> dict:
    """A list of owned objects (fetch their owners with select_related)."""
    rows = [
        (str(o.pk), o.project_id, o.owner.username if o.owner else "", o.visibility, o.name)
        for o in objects
    ]
    return table(["uuid", "project_id", "owner_id", "visibility", "name"], rows)


def task_state(task) -> str:
    return _HANAMI_STATE.get(task.state, task.state)


def task_answer(task) -> dict:
    answer = {
        "end_timestamp": timestamp(task.finished_at),
        "percentage_finished": task.progress,
        "queue_timestamp": timestamp(task.queued_at),
        "start_timestamp": timestamp(task.started_at),
        "state": task_state(task),
    }
    if task.state == "failed":
        answer["error"] = sdk_field_names(task.error)
    return answer


def task_rows(tasks: Iterable) -> dict:
    rows = [
        (
            str(t.pk),
            task_state(t),
            f"{t.progress:.6f}",
            timestamp(t.queued_at),
            timestamp(t.started_at),
            timestamp(t.finished_at),
        )
        for t in tasks
    ]
    return table(["uuid", "state", "percentage", "queued", "start", "end"], rows)
