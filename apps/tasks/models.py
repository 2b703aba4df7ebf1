"""The job engine's rows: tasks, request results and stored task events.

The Task row is the truth about a job (the broker message carries only its id). Tasks of one
cluster carry an increasing `sequence` and run one after another in that order.
"""

import uuid

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


class Task(TenantModel):
    """One unit of work on one host queue: train, request, and the kinds other apps register.

    `dataset` is SET_NULL: deleting a dataset keeps the history of the tasks that used it (a
    still-queued task then fails with a clear message instead of blocking the delete).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, db_index=True)
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.CASCADE, null=True, blank=True, related_name="tasks"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
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
    # Tasks of one cluster run in this order (per cluster; 0 for tasks without a cluster).
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
            models.Index(fields=["cluster", "sequence"]),
            models.Index(fields=["state", "heartbeat_at"]),
            models.Index(fields=["queue", "state", "project"]),
            models.Index(fields=["project", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.pk})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class RequestResult(TenantModel):
    """The outputs of a request task: same id and name as the task, outputs stored as .npy files.

    `shape` is the shape of the predicted-class array (`[num_samples]`); logits, when kept, are
    stored next to it as `[num_samples, num_outputs]`.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    name = models.CharField(max_length=200)
    task = models.OneToOneField(
        Task, on_delete=models.SET_NULL, null=True, blank=True, related_name="request_result"
    )
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    num_samples = models.PositiveIntegerField(default=0)
    shape = models.JSONField(default=list, blank=True)
    has_logits = models.BooleanField(default=False)
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"


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
