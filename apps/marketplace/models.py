"""The Morpheo marketplace of a project: problems, algos, data, learnuplets and preduplets.

The protocol (`/work/shared/protocols/morpheo.md`) names every document by a client-chosen `uuid`;
here that uuid is unique inside one project only (another project may reuse it without learning
that it exists), and rows keep an integer primary key.

How the protocol's nouns map onto Orchard's:
- an **algo** is an Orchard model: `cluster` (when the algo's uuid is the id of a cluster of the
  project) or `architecture` (when its name is an architecture of `ml.architectures`; the cluster is
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
    # An `ml.architectures` architecture name; the cluster is built from it on first use.
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

    `todo -> pending` (a worker claims it: `worker`, `claimed_by`, `claimed_at`) `-> done |
    failed`, and `failed -> done` (a late success report, as upstream accepts); every transition
    is one conditional UPDATE, so of two racing workers exactly one wins. A preduplet whose model
    was deleted before it ran goes `todo -> failed` (`failure_reason` says so).
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
    # When a worker (or the built-in compute) claimed it: the claim -> done time is
    # `timestamp_done - claimed_at`.
    claimed_at = models.DateTimeField(null=True, blank=True)
    timestamp_done = models.DateTimeField(null=True, blank=True)
    # Why it failed, when Orchard knows: the built-in compute's error, or a preduplet's model
    # deleted before it could run. Empty otherwise (an HTTP worker's `failed` gives none).
    failure_reason = models.TextField(blank=True, default="")

    class Meta:
        abstract = True


class Learnuplet(Uplet):
    """One training step of an algo: train `model_start` on `train_data`, test on `test_data`,
    save `model_end`. Rank r+1 starts from the best model of the algo so far (its `model_start`
    stays empty until rank r has finished), except the first rank of each batch series (a new
    algo's rank 0, new data's first rank), which gets its `model_start` at creation."""

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
    """A prediction request: run `model` (the problem's best model) on `data`.

    `data` is stored as it was requested: one uuid string (upstream's later form, the Go
    client's `OrchestratorPrediction`) or a list of uuids (the protocol page's form); use
    `data_uuids` for the list either way."""

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

    @property
    def data_uuids(self) -> list[str]:
        return [self.data] if isinstance(self.data, str) else list(self.data or [])


class ComputeEndpoint(TenantModel):
    """The compute API of a project (an unmodified morpheo-compute `api`): every uplet of the
    project that becomes runnable is POSTed to `{url}/learn` or `{url}/pred`, as upstream's
    orchestrator does with its `COMPUTE_URL`. Without one (or disabled) the built-in compute
    runs what it can. One per project."""

    url = models.URLField(max_length=500)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project"], name="unique_compute_endpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}: {self.url}"


class PushState(models.TextChoices):
    PENDING = "pending", "Pending (not delivered yet)"
    DELIVERED = "delivered", "Delivered (the compute API answered 2xx)"
    FAILED = "failed", "Failed (refused, or out of attempts)"


class ComputePush(TenantModel):
    """The outbox: one POST of one uplet to a compute API, recorded in the same transaction that
    made the uplet runnable, so a restart never loses it (at-least-once). A `compute_push` job
    of the task engine delivers it (`apps.marketplace.push`); `body` holds the exact bytes."""

    class Kind(models.TextChoices):
        LEARN = "learn", "learnuplet (POST /learn)"
        PRED = "pred", "preduplet (POST /pred)"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    uplet_uuid = models.UUIDField(db_index=True)
    url = models.URLField(max_length=520)
    body = models.TextField()
    state = models.CharField(
        max_length=16, choices=PushState.choices, default=PushState.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    # The compute API's last HTTP status (None: no answer) and what went wrong, for the admin.
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    task = models.ForeignKey(
        "tasks.Task", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["project", "state"], name="mkt_push_state")]

    def __str__(self) -> str:
        return f"push {self.kind} {self.uplet_uuid} ({self.state})"
