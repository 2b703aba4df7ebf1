"""Users, projects (the tenants) and memberships."""

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models

from apps.core.ids import id_default
from apps.core.models import TimeStampedModel
from apps.core.tenancy import ProjectScopedQuerySet, Role


class User(AbstractUser):
    """A person or a service account (a machine client such as a compute worker).

    `username` is the user id that the Hanami protocol calls `id`; global admins are superusers.
    """

    name = models.CharField(max_length=150, blank=True)
    is_service_account = models.BooleanField(
        default=False, help_text="A machine client (compute worker, CI); cannot use the admin."
    )

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username


class Project(TimeStampedModel):
    """A tenant: every dataset, model, task and export belongs to exactly one project."""

    class Task(models.TextChoices):
        CLASSIFICATION = "classification", "Classification"
        REGRESSION = "regression", "Regression"
        SEGMENTATION = "segmentation", "Segmentation"
        DETECTION = "detection", "Detection"

    id = models.CharField(primary_key=True, max_length=64, default=id_default("proj"))
    name = models.CharField(max_length=200)
    task = models.CharField(max_length=32, choices=Task.choices, default=Task.CLASSIFICATION)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class Membership(TimeStampedModel):
    """A user's role in a project; project admins see and change everything in it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    is_project_admin = models.BooleanField(default=False)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["project_id", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="unique_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project_id} as {self.role}"
