"""The job engine's rows: tasks and their stored events.

The Task row is the truth about a job (the broker message carries only its id). A task may name
the object it works on, its target (`target_type`, an "app_label.model" string such as
"clusters.cluster", and `target_id`): the engine knows nothing else of it, but tasks of one target
carry an increasing `sequence` and run one after another in that order.
"""

import uuid
from typing import Any

from django.db import models

from apps.core.models import TenantModel


class TaskState(models.TextChoices):
    QUEUED = "queued", "Queued"
    ACTIVE = "active", "Active"
    FINISHED = "finished", "Finished"
    ABORTED = "aborted", "Aborted"
    FAILED = "failed", "Failed"


TERMINAL_STATES = frozenset({TaskState.FINISHED, TaskState.ABORTED, TaskState.FAILED})
PENDING_STATES = frozenset({TaskState.QUEUED, TaskState.ACTIVE})


def target_of(obj: models.Model) -> dict[str, Any]:
    """The target fields naming `obj` (a model row): filter with `Task.objects.filter(**...)`."""
    return {"target_type": obj._meta.label_lower, "target_id": obj.pk}


class Task(TenantModel):
    """One unit of work on one host queue, of a kind that an app registers.

    The app that owns the target removes its tasks when the target goes (the clusters app for
    a cluster's tasks).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, db_index=True)
    # What the task works on ("clusters.cluster" and the cluster's id); empty: nothing.
    target_type = models.CharField(max_length=100, blank=True, default="")
    target_id = models.UUIDField(null=True, blank=True)
    queue = models.CharField(max_length=32, default="cpu")
    state = models.CharField(
        max_length=16, choices=TaskState.choices, default=TaskState.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # Tasks of one target run in this order (per target; 0 for tasks without a target).
    sequence = models.PositiveBigIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    # When the task's current broker message was sent (NULL: none is known to be in flight). It
    # is also that message's token: a waiting task's message re-sends itself only while it is the
    # current one, and the sweeper re-sends a queued task whose message is older than
    # TASK_QUEUED_RESEND_S (lost with a broker restart, or never sent).
    sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["target_type", "target_id", "sequence"]),
            models.Index(fields=["state", "heartbeat_at"]),
            models.Index(fields=["queue", "state", "project"]),
            models.Index(fields=["project", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.pk})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class TaskEvent(models.Model):
    """A stored progress/metrics event of a task, so a reconnecting client can replay them.

    Written at most once per epoch (or per stage), never per batch.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["task", "seq"], name="unique_task_event_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} #{self.seq} {self.kind}"
