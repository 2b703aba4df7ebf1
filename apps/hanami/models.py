"""The gateway's own records: the audit log (every request) and the error log (server errors),
served by `GET /control/v1/audit_log` and `error_log` like upstream Hanami."""

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    endpoint = models.CharField(max_length=200)
    request_type = models.CharField(max_length=8)
    status = models.PositiveSmallIntegerField(default=200)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.request_type} {self.endpoint}"


class ErrorEntry(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    component = models.CharField(max_length=64, default="gateway")
    context = models.CharField(max_length=200)
    values = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"])]
        verbose_name_plural = "error entries"

    def __str__(self) -> str:
        return f"{self.component} {self.context}"
