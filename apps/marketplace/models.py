"""The Morpheo marketplace of a project: problems, algos, data, learnuplets and preduplets.

The protocol (`/work/shared/protocols/morpheo.md`) names every document by a client-chosen `uuid`;
here that uuid is unique inside one project only (another project may reuse it without learning
that it exists), and rows keep an integer primary key.

How the protocol's nouns map onto Orchard's:
- an **algo** is an Orchard model: `cluster` (when the algo's uuid is the id of a cluster of the
  project) or `architecture` (when its name is an architecture of `ml.networks`; the cluster is
  created on first use). An algo with neither is *external*: only HTTP compute workers run it.
- a **data** is an Orchard dataset: `dataset` is set when the data's uuid is the id of a dataset of
  the project. Other data are external (only HTTP compute workers can read them).
- a **model** (`model_start`, `model_end`, a preduplet's `model`) is a Checkpoint id when the
  built-in compute trained it; rank 0 starts from the algo itself (`model_start == algo.uuid`).
"""

from django.conf import settings
from django.db import models

from apps.core.models import TenantModel


class UpletStatus(models.TextChoices):
    TODO = "todo", "To do"
    PENDING = "pending", "Pending (a worker took it)"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


FINISHED_STATUSES = (UpletStatus.DONE, UpletStatus.FAILED)


class Problem(TenantModel):
    """A learning problem: its workflow, its test data and the size of each training batch."""

    uuid = models.UUIDField()
    workflow = models.UUIDField()
    # Data uuids (strings) held out for testing; they need not be registered yet.
    test_dataset = models.JSONField(default=list)
    size_train_dataset = models.PositiveIntegerField()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "uuid"], name="unique_problem_uuid"),
        ]

    def __str__(self) -> str:
        return str(self.uuid)


class Algo(TenantModel):
    """An algorithm submitted to a problem: an Orchard model, or an external one (see module)."""

    uuid = models.UUIDField()
    name = models.CharField(max_length=200)
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="algos")
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # An `ml.networks` architecture name; the cluster is built from it on first use.
    architecture = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "uuid"], name="unique_algo_uuid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"

    @property
    def is_builtin(self) -> bool:
        """Whether the built-in compute can train it (an Orchard model)."""
        return self.cluster_id is not None or bool(self.architecture)


class Data(TenantModel):
    """A data file registered for problems; an Orchard dataset when `dataset` is set."""

    uuid = models.UUIDField()
    problems = models.ManyToManyField(Problem, related_name="data", blank=True)
    dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "data"
        constraints = [
            models.UniqueConstraint(fields=["project", "uuid"], name="unique_data_uuid"),
        ]

    def __str__(self) -> str:
        return str(self.uuid)


class Uplet(TenantModel):
    """What learnuplets and preduplets share: the status machine and who took them.

    `todo -> pending` (a worker claims it: `worker`, `claimed_by`) `-> done | failed`; every
    transition is one conditional UPDATE, so of two racing workers exactly one wins.
    """

    uuid = models.UUIDField()
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="+")
    workflow = models.UUIDField()
    status = models.CharField(
        max_length=8, choices=UpletStatus.choices, default=UpletStatus.TODO, db_index=True
    )
    # The worker uuid a compute worker sent (the Go worker sends the zero uuid).
    worker = models.UUIDField(null=True, blank=True)
    # The account that claimed it (None: the built-in compute).
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The built-in compute's job, when it runs this uplet.
    task = models.ForeignKey(
        "tasks.Task", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    timestamp_done = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class Learnuplet(Uplet):
    """One training step of an algo: train `model_start` on `train_data`, test on `test_data`,
    save `model_end`. Ranks of one algo are trained in order; rank r+1 starts from the best model
    of the ranks before it (its `model_start` stays empty until rank r has finished)."""

    algo = models.ForeignKey(Algo, on_delete=models.CASCADE, related_name="learnuplets")
    rank = models.PositiveIntegerField()
    model_start = models.UUIDField(null=True, blank=True)
    model_end = models.UUIDField()
    train_data = models.JSONField(default=list)
    test_data = models.JSONField(default=list)
    perf = models.FloatField(null=True, blank=True)
    # Per data file: a list (the documented form) or a map {data uuid: perf} (the Go worker's).
    train_perf = models.JSONField(null=True, blank=True)
    test_perf = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "uuid"], name="unique_learnuplet_uuid"),
            models.UniqueConstraint(fields=["algo", "rank"], name="unique_learnuplet_rank"),
        ]
        indexes = [models.Index(fields=["project", "status"], name="mkt_learnuplet_status")]

    def __str__(self) -> str:
        return f"learnuplet {self.uuid} (rank {self.rank}, {self.status})"


class Preduplet(Uplet):
    """A prediction request: run `model` (the problem's best model) on `data`."""

    model = models.UUIDField()
    data = models.JSONField(default=list)
    prediction_storage_uuid = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "uuid"], name="unique_preduplet_uuid"),
        ]
        indexes = [models.Index(fields=["project", "status"], name="mkt_preduplet_status")]

    def __str__(self) -> str:
        return f"preduplet {self.uuid} ({self.status})"
