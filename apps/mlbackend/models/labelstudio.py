"""Label Studio ML backends: project-owned objects that Label Studio calls at `/ml/<id>/`.

A backend serves one Orchard model (a cluster, optionally starting from a checkpoint) or one
experiment of the training studio, under one label config (a Choices control over an image or a
text). Annotations Label Studio sends by webhook are stored per backend; training a model-bound
backend on them writes a new checkpoint and bumps the backend's `version` (the `model_version`
Label Studio shows is `1.<version>.0`). An experiment-bound backend serves the `best` checkpoint of
the experiment's latest completed run, and its `model_version` names that run
(`<run number>.0.0-<run id>`, `0.0.0` before any run completed); it is trained in the studio.
"""

from django.db import models

from apps.core.ids import id_default
from apps.core.models import TenantModel, TimeStampedModel

__all__ = ["LabelStudioAnnotation", "LabelStudioBackend", "LabelStudioModelVersion"]


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


class LabelStudioModelVersion(TimeStampedModel):
    """A trained version of a backend: the checkpoint it wrote and its training figures."""

    backend = models.ForeignKey(
        LabelStudioBackend, on_delete=models.CASCADE, related_name="versions"
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
            models.UniqueConstraint(fields=["backend", "number"], name="unique_ls_backend_version")
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
