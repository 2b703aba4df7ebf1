"""Filters of the marketplace lists: uplets by problem, algo and status (each list takes the ones
its `filters` names), compute pushes by state. Messages as DRF words them (the lists answered
with a DRF serializer's errors before)."""

import django_filters

from apps.core.api.filters import EnvelopeFilterSet, choice_filter
from apps.marketplace.models import PushState, UpletStatus

_UUID = {"invalid": "Must be a valid UUID."}


class UpletFilter(EnvelopeFilterSet):
    """`problem`, `algo` (uuids of the related rows) and `status`; a view passes the names it
    accepts as `names` (other parameters are not read)."""

    invalid_message = "Invalid filter."
    blank_refused = ("problem", "algo", "status")

    problem = django_filters.UUIDFilter(field_name="problem__uuid", error_messages=_UUID)
    algo = django_filters.UUIDFilter(field_name="algo__uuid", error_messages=_UUID)
    status = choice_filter(UpletStatus.values, message='"%(value)s" is not a valid choice.')

    def __init__(self, data=None, *args, names=(), **kwargs):
        if data is not None:
            data = {name: data[name] for name in names if name in data}
        super().__init__(data, *args, **kwargs)


class ComputePushFilter(EnvelopeFilterSet):
    blank_refused = ("state",)

    state = choice_filter(PushState.values)
