"""The training studio: experiments (a training configuration), runs (one training of it) and
evaluations (a run's checkpoint measured on a dataset subset).

A run IS a task of the job engine (kind `studio_train`, one-to-one) and owns a cluster (the model it
trains) and two checkpoints of it, `best` and `last`. An evaluation is a task too (kind
`studio_evaluate`); its per-item results live in NumPy files, never one row per item.
"""

from django.db import models

from apps.core.ids import id_default
from apps.core.models import TenantModel


class RunStatus(models.TextChoices):
    """A run's status as the studio shows it, derived from its task's state."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    # The plan calls a stopped run "cancelled" (the member keeps Orchard's name).
    STOPPED = "cancelled", "Cancelled"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED})

# Task state -> studio status (a queued task is pending, also after a resume or re-queue).
TASK_STATE_TO_STATUS = {
    "queued": RunStatus.PENDING,
    "active": RunStatus.RUNNING,
    "finished": RunStatus.COMPLETED,
    "failed": RunStatus.FAILED,
    "aborted": RunStatus.STOPPED,
}


class Experiment(TenantModel):
    """A training configuration: data (dataset, split), model (architecture or template, input
    size), optimisation (optimizer, learning rate and schedule, epochs, batch size, augmentation,
    seed) and the devices to train on. Every start takes a snapshot of it into a Run."""

    ARCHITECTURE_TEMPLATE = "template"

    id = models.CharField(
        primary_key=True, max_length=32, default=id_default("exp"), editable=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The split of an image dataset (its row, so that deleting an earlier split, which re-indexes
    # the others, keeps pointing at the same one); None trains on the whole dataset.
    split = models.ForeignKey(
        "datasets.Split", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Validation data for datasets without splits (e.g. the demo's digits-train / digits-test).
    val_dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # A name of `ml.architectures.ARCHITECTURES`, or "template" for the Hanami template text below.
    architecture = models.CharField(max_length=32, default="cnn_small")
    template = models.TextField(blank=True, default="")
    input_size = models.JSONField(default=list, blank=True)
    optimizer = models.CharField(max_length=16, default="adam")
    learning_rate = models.FloatField(default=2e-3)
    scheduler = models.CharField(max_length=16, blank=True, default="")
    weight_decay = models.FloatField(default=0.0)
    epochs = models.PositiveIntegerField(default=20)
    batch_size = models.PositiveIntegerField(default=32)
    augmentation = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True, default=0)
    devices = models.JSONField(default=list, blank=True)
    # The plan's options without a column of their own: pretrained, freeze_backbone, dropout,
    # momentum, warmup_epochs, step_size, gamma, poly_power, milestones, early_stopping_patience,
    # loss, precision and the plan's `augmentations` pipelines ({"train": [...], "val": [...]}).
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"


class Run(TenantModel):
    """One training of an experiment: a `studio_train` task, the cluster it trains and the run's
    `best` and `last` checkpoints. `config` is the experiment's configuration when it started."""

    id = models.CharField(
        primary_key=True, max_length=32, default=id_default("run"), editable=False
    )
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField(default=1)
    task = models.OneToOneField(
        "tasks.Task", on_delete=models.CASCADE, related_name="studio_run", null=True, blank=True
    )
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    config = models.JSONField(default=dict, blank=True)
    best_checkpoint = models.ForeignKey(
        "clusters.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_checkpoint = models.ForeignKey(
        "clusters.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    epochs_completed = models.PositiveIntegerField(default=0)
    best_epoch = models.PositiveIntegerField(null=True, blank=True)
    # The metric that chose `best`: val_accuracy with validation data, else (train) accuracy.
    best_metric = models.CharField(max_length=32, blank=True, default="")
    best_value = models.FloatField(null=True, blank=True)
    resumes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["experiment", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.pk} of {self.experiment_id}"

    @property
    def status(self) -> str:
        if self.task is None:
            return RunStatus.FAILED
        return TASK_STATE_TO_STATUS.get(self.task.state, RunStatus.FAILED)


class Evaluation(TenantModel):
    """A run's `best` or `last` checkpoint measured on a subset of a dataset (`studio_evaluate`).

    `results` holds accuracy, per-class precision/recall/F1 and the confusion matrix; per-item
    predictions are NumPy arrays under the project's `training/evaluations/<id>/` directory."""

    class Subset(models.TextChoices):
        TRAIN = "train", "Train"
        VAL = "val", "Validation"
        TEST = "test", "Test"
        ALL = "all", "All items"

    id = models.CharField(
        primary_key=True, max_length=32, default=id_default("eval"), editable=False
    )
    name = models.CharField(max_length=200, blank=True, default="")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="evaluations")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="evaluations")
    checkpoint_name = models.CharField(max_length=8, default="best")
    checkpoint = models.ForeignKey(
        "clusters.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    split = models.ForeignKey(
        "datasets.Split", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    split_index = models.PositiveIntegerField(null=True, blank=True)
    split_subset = models.CharField(max_length=8, choices=Subset.choices, default=Subset.TEST)
    batch_size = models.PositiveIntegerField(default=256)
    task = models.OneToOneField(
        "tasks.Task",
        on_delete=models.SET_NULL,
        related_name="studio_evaluation",
        null=True,
        blank=True,
    )
    num_samples = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.pk} of {self.run_id}"

    @property
    def status(self) -> str:
        if self.task is None:
            return RunStatus.FAILED
        return TASK_STATE_TO_STATUS.get(self.task.state, RunStatus.FAILED)
