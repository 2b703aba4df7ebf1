"""List filters of the main API as django-filter FilterSets, answering invalid values in the
envelope: VALIDATION_ERROR (422) whose `details` name each refused parameter, and whose message is
`"<parameter>: <reason>"` (the first refused one) unless the FilterSet gives one message for all.

Views apply them to the already-scoped queryset (`visible_to` first, then the filters):
`SomeFilter.apply(request, queryset, access=self.access)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import django_filters
from django.core.exceptions import ValidationError

from apps.core.exceptions import ValidationFailed


def choice_filter(values, **kwargs) -> django_filters.ChoiceFilter:
    """A filter on one of `values`; another value answers "must be one of a, b, c."."""
    message = kwargs.pop("message", None) or f"must be one of {', '.join(values)}."
    return django_filters.ChoiceFilter(
        choices=[(v, v) for v in values], error_messages={"invalid_choice": message}, **kwargs
    )


class EnvelopeFilterSet(django_filters.FilterSet):
    """A FilterSet whose invalid values raise ValidationFailed (see the module docstring)."""

    # One message for every refusal (details still name the parameters); None: "<name>: <reason>".
    invalid_message: ClassVar[str | None] = None
    # Parameters refused when given empty (`?state=`), as the hand-written checks did; others
    # treat an empty value as "no filter".
    blank_refused: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data=None, queryset=None, *, request=None, access=None, **kwargs):
        super().__init__(data, queryset, request=request, **kwargs)
        self.access = access  # the caller's ProjectAccess, for filters that look rows up

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name in self.blank_refused:
            if self.data.get(name) == "" and name not in self.form.errors:
                messages = self.form.fields[name].error_messages
                message = messages.get("invalid_choice") or messages["invalid"]
                self.form.add_error(name, ValidationError(message, params={"value": ""}))
                valid = False
        return valid

    @classmethod
    def apply(cls, request, queryset, **kwargs: Any):
        """`queryset` narrowed by the request's filters, or ValidationFailed."""
        filterset = cls(request.query_params, queryset, request=request, **kwargs)
        if not filterset.is_valid():
            errors = {
                name: [str(m) for m in messages] for name, messages in filterset.errors.items()
            }
            name, messages = next(iter(errors.items()))
            raise ValidationFailed(cls.invalid_message or f"{name}: {messages[0]}", details=errors)
        return filterset.qs
