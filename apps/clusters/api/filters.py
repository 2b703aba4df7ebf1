"""Filters of the checkpoint list (`?cluster=`)."""

import uuid

import django_filters

from apps.clusters.models import Checkpoint
from apps.core.api.filters import EnvelopeFilterSet


class CheckpointFilter(EnvelopeFilterSet):
    cluster = django_filters.CharFilter(method="filter_cluster")

    class Meta:
        model = Checkpoint
        fields: list[str] = []

    def filter_cluster(self, queryset, name, value):
        """The checkpoints of one cluster; a value that is no cluster id matches none (not an
        error: an id the caller cannot know answers like one it may not see)."""
        try:
            return queryset.filter(cluster_id=uuid.UUID(value))
        except ValueError:
            return queryset.none()
