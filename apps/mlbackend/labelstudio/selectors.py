"""Reads of the Label Studio half."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.core.exceptions import NotFound
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend, LabelStudioModelVersion


def backend_for_gateway(backend_id: str) -> LabelStudioBackend:
    """The backend Label Studio addresses at `/ml/<backend_id>/`, or NotFound.

    The gateway has no Orchard user: the backend id (and its Basic credentials, checked next by
    `services.backend_authenticate`) is the whole scope, and everything after this call only
    touches this backend's rows.
    """
    # One plain query: /health needs nothing more (its model, checkpoint and owner load lazily
    # on the routes that use them).
    try:
        return LabelStudioBackend.objects.get(pk=str(backend_id))
    except LabelStudioBackend.DoesNotExist:
        raise NotFound("ML backend not found.") from None


def backend_versions(*, backend: LabelStudioBackend) -> QuerySet[LabelStudioModelVersion]:
    return LabelStudioModelVersion.objects.filter(backend=backend).order_by("number")


def version_names(*, backend: LabelStudioBackend) -> list[str]:
    """The model versions predictions can name, oldest first: every trained version that kept
    its checkpoint, and the current one (`1.0.0` before any training)."""
    from apps.mlbackend.models.labelstudio import model_version_name

    numbers = backend_versions(backend=backend).filter(checkpoint__isnull=False)
    return [
        model_version_name(n)
        for n in sorted({*numbers.values_list("number", flat=True), backend.version})
    ]


def annotation_list(*, backend: LabelStudioBackend) -> QuerySet[LabelStudioAnnotation]:
    return LabelStudioAnnotation.objects.filter(backend=backend).order_by("annotation_id")
