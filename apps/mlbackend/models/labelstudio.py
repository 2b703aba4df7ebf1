"""Label Studio ML backends: project-owned objects that Label Studio calls at `/ml/<id>/`.

A backend serves one Orchard model (a cluster, optionally starting from a checkpoint) under one
label config (a Choices control over an image or a text). Annotations Label Studio sends by
webhook are stored per backend; training on them writes a new checkpoint and bumps the backend's
`version` (the `model_version` Label Studio shows is `1.<version>.0`).
"""

from django.db import models

from apps.core.ids import id_default
from apps.core.models import TenantModel, TimeStampedModel

__all__ = ["LabelStudioAnnotation", "LabelStudioBackend", "LabelStudioModelVersion"]


class LabelStudioBackend(TenantModel):
    """One ML backend URL for Label Studio, bound to a model of the project."""

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
    label_config = models.TextField(blank=True)
    from_name = models.CharField(
        max_length=200, blank=True, help_text="The Choices control to serve (default: the first)."
    )
    # The parsed interface: {kind, from_name, to_name, data_key, labels, multiple}.
    interface = models.JSONField(default=dict, blank=True)
    basic_auth_user = models.CharField(max_length=150, blank=True)
    # A Django password hash (never the password); empty: no Basic auth.
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
        return model_version_name(self.version)

    @property
    def has_credentials(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_password)


def model_version_name(version: int) -> str:
    """The semver-like string Label Studio shows for a backend version."""
    return f"1.{int(version)}.0"


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
