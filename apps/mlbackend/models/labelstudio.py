"""Label Studio ML backends: project-owned objects that Label Studio calls at `/ml/<id>/`.

A backend serves one Orchard model (a cluster, optionally starting from a checkpoint) or one
experiment of the training studio, under one label config (Choices over an image or a text,
Labels over a text, RectangleLabels over an image). A model-bound backend keeps each further
Label Studio project that uses its URL apart (LabelStudioProject: its own config and model). Annotations Label Studio sends by webhook are stored per backend; training a model-bound
backend on them writes a new checkpoint and bumps the backend's `version` (the `model_version`
Label Studio shows is `1.<version>.0`). An experiment-bound backend serves the `best` checkpoint of
the experiment's latest completed run, and its `model_version` names that run
(`<run number>.0.0-<run id>`, `0.0.0` before any run completed); it is trained in the studio.
"""

from django.db import models

from apps.core.ids import id_default
from apps.core.models import TenantModel, TimeStampedModel

__all__ = [
    "LabelStudioAnnotation",
    "LabelStudioBackend",
    "LabelStudioModelVersion",
    "LabelStudioProject",
]


def new_webhook_secret() -> str:
    """A random secret for a backend's secret URL (`/ml/<id>/s/<secret>/`)."""
    from django.utils.crypto import get_random_string

    return get_random_string(40)


class LabelStudioBackend(TenantModel):
    """One ML backend URL for Label Studio, bound to a model or an experiment of the project
    (exactly one of `cluster` and `experiment` when created; a deleted one leaves it unbound)."""

    id = models.CharField(
        primary_key=True, max_length=32, default=id_default("mlb"), editable=False
    )
    name = models.CharField(max_length=200)
    cluster = models.ForeignKey(
        "clusters.Cluster",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The model that predicts and is trained; a deleted model leaves the backend "
        "unbound (predict and train then answer 409).",
    )
    checkpoint = models.ForeignKey(
        "clusters.Checkpoint",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Weights to predict with; empty: the model's current weights. Training "
        "replaces it with the checkpoint it wrote.",
    )
    experiment = models.ForeignKey(
        "training.Experiment",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Instead of a model: serve the best checkpoint of this experiment's latest "
        "completed run (a new completed run is a new model version).",
    )
    label_config = models.TextField(blank=True)
    from_name = models.CharField(
        max_length=200, blank=True, help_text="The Choices control to serve (default: the first)."
    )
    # The parsed interface: {kind, from_name, to_name, data_key, labels, multiple}.
    interface = models.JSONField(default=dict, blank=True)
    basic_auth_user = models.CharField(max_length=150, blank=True)
    # A keyed hash `hmac-sha256$salt$hex` (older rows: a Django password hash, rewritten on their
    # first successful check); never the password. Empty: no Basic auth.
    basic_auth_password = models.CharField(max_length=256, blank=True)
    allowed_hosts = models.JSONField(
        default=list,
        blank=True,
        help_text="Extra hosts ('name' or 'name:port') task data may be fetched from, besides "
        "the Label Studio host of the last /setup.",
    )
    allow_private_networks = models.BooleanField(
        default=False,
        help_text="Allow fetching from private, loopback and link-local addresses (a Label "
        "Studio on this machine or LAN).",
    )
    train_on_annotation = models.BooleanField(
        default=False, help_text="Also start training on ANNOTATION_CREATED/UPDATED webhooks."
    )
    train_params = models.JSONField(
        default=dict,
        blank=True,
        help_text="Training options (epochs, batch_size, learning_rate...).",
    )
    # What the last /setup said: Label Studio's base URL, its access token and project uid.
    label_studio_url = models.CharField(max_length=500, blank=True)
    access_token = models.CharField(max_length=500, blank=True)
    ls_project = models.CharField(max_length=64, blank=True)
    last_setup_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    base_checkpoint = models.ForeignKey(
        "clusters.Checkpoint",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The weights a further Label Studio project's own model starts from (the "
        "checkpoint bound through the API; empty: the model's initial weights).",
    )
    # The secret of the backend's secret URL `/ml/<id>/s/<secret>/`: Label Studio creates the
    # annotation webhook under the URL it was given and sends it without Basic credentials, so a
    # backend with credentials accepts webhooks under its secret URL instead.
    webhook_secret = models.CharField(max_length=64, default=new_webhook_secret)
    # The last /predict batch: {at, tasks, predicted, failed, errors: [{task_id, error}]}.
    last_predict = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "-created_at"])]
        verbose_name = "Label Studio backend"

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"

    @property
    def model_version(self) -> str:
        if self.experiment_id is None:
            return model_version_name(self.version)
        if "served_run_pk" in self.__dict__ and "_served_run" not in self.__dict__:
            # A list annotated the served run (selectors.with_served_run): no query.
            pk, number = self.served_run_pk, self.served_run_number
            return run_version_name(number, pk) if pk is not None else NO_RUN_VERSION
        run = self.served_run
        return run_version_name(run.number, run.pk) if run is not None else NO_RUN_VERSION

    @property
    def served_run(self):
        """The run an experiment-bound backend serves (its experiment's latest completed run
        that kept a best checkpoint; None when there is none or the backend is model-bound),
        looked up once per instance so that a request's version and weights agree."""
        if self.experiment_id is None:
            return None
        if "_served_run" not in self.__dict__:
            from apps.mlbackend.labelstudio.selectors import served_runs

            self._served_run = served_runs(experiment_id=self.experiment_id).first()
        return self._served_run

    @property
    def has_credentials(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_password)


def model_version_name(version: int) -> str:
    """The semver-like string Label Studio shows for a backend version."""
    return f"1.{int(version)}.0"


# The version an experiment-bound backend shows before its experiment has a completed run.
NO_RUN_VERSION = "0.0.0"


def run_version_name(number: int, run_id: str) -> str:
    """The version string of an experiment run: its number, then its id (a pre-release tag)."""
    return f"{int(number)}.0.0-{run_id}"


class LabelStudioProject(TimeStampedModel):
    """A further Label Studio project served by one backend URL, with its own model.

    The first Label Studio project that sets a model-bound backend up is served by the backend's
    own fields (`ls_project`, `label_config`, `cluster`, `checkpoint`, `version`...). Every other
    project gets one of these rows: its own label config, Label Studio host and token, and its
    own model (a copy of the backend's architecture starting from `base_checkpoint`), trained
    only on its own annotations, so that projects never mix their models or labels.
    """

    backend = models.ForeignKey(
        LabelStudioBackend, on_delete=models.CASCADE, related_name="ls_projects"
    )
    ls_project = models.CharField(max_length=64, help_text="Label Studio's project id.")
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    checkpoint = models.ForeignKey(
        "clusters.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    label_config = models.TextField(blank=True)
    interface = models.JSONField(default=dict, blank=True)
    label_studio_url = models.CharField(max_length=500, blank=True)
    access_token = models.CharField(max_length=500, blank=True)
    last_setup_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    last_predict = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["backend", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["backend", "ls_project"], name="unique_ls_backend_project"
            )
        ]
        verbose_name = "Label Studio project of a backend"

    def __str__(self) -> str:
        return f"{self.backend_id} project {self.ls_project}"

    # What the services read from a scope (a backend serves its first project itself).
    experiment_id = None
    served_run = None

    @property
    def model_version(self) -> str:
        return model_version_name(self.version)

    @property
    def project_id(self):
        return self.backend.project_id

    @property
    def from_name(self) -> str:
        return self.backend.from_name

    @property
    def allowed_hosts(self):
        return self.backend.allowed_hosts

    @property
    def allow_private_networks(self) -> bool:
        return self.backend.allow_private_networks


class LabelStudioModelVersion(TimeStampedModel):
    """A trained version of a backend (or of one of its further Label Studio projects): the
    checkpoint it wrote and its training figures."""

    backend = models.ForeignKey(
        LabelStudioBackend, on_delete=models.CASCADE, related_name="versions"
    )
    ls_project = models.ForeignKey(
        LabelStudioProject,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="versions",
        help_text="The further Label Studio project this version belongs to (empty: the "
        "backend's first project).",
    )
    number = models.PositiveIntegerField()
    checkpoint = models.ForeignKey(
        "clusters.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    task = models.ForeignKey(
        "tasks.Task", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    labels = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["backend", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["backend", "number"],
                condition=models.Q(ls_project__isnull=True),
                name="unique_ls_backend_version",
            ),
            models.UniqueConstraint(
                fields=["ls_project", "number"],
                condition=models.Q(ls_project__isnull=False),
                name="unique_ls_project_version",
            ),
        ]
        verbose_name = "Label Studio model version"

    def __str__(self) -> str:
        return f"{self.backend_id} {self.name}"

    @property
    def name(self) -> str:
        return model_version_name(self.number)


class LabelStudioAnnotation(TimeStampedModel):
    """An annotation Label Studio sent (webhook or /train), with its task's data, for training.

    `label` is the choice of the backend's control (the first one when several were ticked;
    empty when the annotation has none or was cancelled: such rows are kept but not trained on).
    """

    backend = models.ForeignKey(
        LabelStudioBackend, on_delete=models.CASCADE, related_name="annotations"
    )
    annotation_id = models.BigIntegerField(help_text="Label Studio's annotation id.")
    task_id = models.BigIntegerField(null=True, blank=True, help_text="Label Studio's task id.")
    ls_project = models.CharField(max_length=64, blank=True)
    task_data = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=list, blank=True)
    label = models.CharField(max_length=500, blank=True)
    was_cancelled = models.BooleanField(default=False)

    class Meta:
        ordering = ["backend", "annotation_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["backend", "annotation_id"], name="unique_ls_backend_annotation"
            )
        ]
        verbose_name = "Label Studio annotation"

    def __str__(self) -> str:
        return f"{self.backend_id} #{self.annotation_id} {self.label or '-'}"
