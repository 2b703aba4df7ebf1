"""Filters of the dataset list (`?kind=`)."""

from apps.core.api.filters import EnvelopeFilterSet, choice_filter
from apps.datasets.models import Dataset


class DatasetFilter(EnvelopeFilterSet):
    kind = choice_filter(Dataset.Kind.values)

    class Meta:
        model = Dataset
        fields: list[str] = []
