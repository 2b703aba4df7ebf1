"""Filters of the export list (`?format=`, or its older name `?export_format=`)."""

from apps.core.api.filters import EnvelopeFilterSet, choice_filter
from apps.exports.formats import FORMATS
from apps.exports.models import Export

_MESSAGE = f"Must be one of {', '.join(FORMATS)}."


class ExportFilter(EnvelopeFilterSet):
    format = choice_filter(list(FORMATS), message=_MESSAGE)
    export_format = choice_filter(list(FORMATS), field_name="format", message=_MESSAGE)

    class Meta:
        model = Export
        fields: list[str] = []

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and data.get("format"):
            # `format` wins: the older name is then not read at all (nor refused).
            data = data.copy()
            data.pop("export_format", None)
        super().__init__(data, *args, **kwargs)
