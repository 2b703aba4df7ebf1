"""Filters of the project's run list (`?experiment_id=`, `?status=`)."""

import django_filters

from apps.core.api.filters import EnvelopeFilterSet, choice_filter
from apps.core.exceptions import NotFound
from apps.training import selectors
from apps.training.exceptions import ExperimentNotFound
from apps.training.models import TASK_STATE_TO_STATUS, Run, RunStatus


class RunFilter(EnvelopeFilterSet):
    experiment_id = django_filters.CharFilter(method="filter_experiment")
    status = choice_filter(RunStatus.values, method="filter_status")

    class Meta:
        model = Run
        fields: list[str] = []

    def is_valid(self) -> bool:
        """An experiment the caller cannot see answers ExperimentNotFound (404), before any
        other parameter is judged."""
        self.experiment = None
        if self.data.get("experiment_id"):
            try:
                self.experiment = selectors.experiment_get(
                    access=self.access, exp_id=self.data["experiment_id"]
                )
            except NotFound:
                raise ExperimentNotFound() from None
        return super().is_valid()

    def filter_experiment(self, queryset, name, value):
        return queryset.filter(experiment=self.experiment)

    def filter_status(self, queryset, name, value):
        """A run's status is its task's state, mapped (several states share one status)."""
        states = [state for state, status in TASK_STATE_TO_STATUS.items() if status == value]
        return queryset.filter(task__state__in=states)
