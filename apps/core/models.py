"""Abstract bases for tenant-owned models."""

from django.conf import settings
from django.db import models

from apps.core.tenancy import TenantQuerySet, Visibility


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class TenantModel(TimeStampedModel):
    """A resource that belongs to one project, with an owner and a visibility.

    Read and write it only through `TenantQuerySet.visible_to` / `editable_by`.
    """

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.SHARED
    )

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True
