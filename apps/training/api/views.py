"""The training studio's routes (seed sections 4 and 5): experiments and runs under
`/api/training/{project_id}/`, evaluations under `/api/evaluation/{project_id}`."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response

from apps.accounts.authentication import JWTAuthentication, user_for_token
from apps.core.api.renderers import EnvelopeJSONRenderer
from apps.core.api.views import ProjectScopedAPIView
from apps.core.exceptions import NotFound, ValidationFailed
from apps.training import plan, selectors, services
from apps.training.api import serializers as s
from apps.training.api.filters import RunFilter
from apps.training.exceptions import ExperimentNotFound, RunNotFound
from apps.training.models import Evaluation, Experiment, Run
from apps.training.streams import run_event_stream

_EXP_ID = OpenApiParameter("exp_id", OpenApiTypes.STR, OpenApiParameter.PATH)
_RUN_ID = OpenApiParameter("run_id", OpenApiTypes.STR, OpenApiParameter.PATH)
_EVAL_ID = OpenApiParameter("eval_id", OpenApiTypes.STR, OpenApiParameter.PATH)
# One server-sent event of a run's stream, as an SSE client parses it (`event`, `data`, `id`,
# `retry`): the schema of each event, not of the stream's text.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "status, epoch_end, complete or error"},
        "data": {"type": "string", "description": "JSON with `type`"},
        "id": {"type": "string", "description": "the stored event's sequence number"},
        "retry": {"type": "integer", "description": "reconnection delay, ms"},
    },
}


def _validated(serializer) -> None:
    serializer.is_valid(raise_exception=True)


def _object(view, error: type[NotFound]):
    """`view.get_object()`, its NotFound carrying the plan's specific code."""
    try:
        return view.get_object()
    except NotFound as exc:
        raise error(exc.message if exc.message != NotFound.default_message else None) from None


def _deleted(kind: str, object_id: str) -> Response:
    """The plan answers every delete with an envelope and 200."""
    return Response({"id": object_id, kind: object_id, "deleted": True})


# --- experiments ---------------------------------------------------------------------------------


class ExperimentListView(ProjectScopedAPIView):
    """Experiments of the project: list, create."""

    queryset = Experiment.objects.all()
    serializer_class = s.ExperimentSerializer

    @extend_schema(responses=s.ExperimentSerializer(many=True))
    def get(self, request, project_id):
        page = self.paginate_queryset(selectors.experiment_list(access=self.access))
        return self.get_paginated_response(s.ExperimentSerializer(page, many=True).data)

    @extend_schema(request=s.ExperimentWriteSerializer, responses=s.ExperimentSerializer)
    def post(self, request, project_id):
        data = s.ExperimentWriteSerializer(data=request.data, context=self.get_serializer_context())
        _validated(data)
        body = request.data if isinstance(request.data, dict) else {}
        config, other = data.split(data.changes(defaults=plan.is_plan_body(body)))
        experiment = services.experiment_create(
            access=self.access,
            actor=request.user,
            name=other.get("name") or "",
            description=other.get("description", ""),
            visibility=other.get("visibility"),
            config=config,
        )
        experiment.runs_count = 0
        return Response(s.ExperimentSerializer(experiment).data)


class ExperimentDetailView(ProjectScopedAPIView):
    """One experiment: its configuration; PATCH changes it; DELETE removes it with its runs."""

    queryset = Experiment.objects.all()
    serializer_class = s.ExperimentSerializer
    lookup_url_kwarg = "exp_id"

    def safely_filter_queryset(self, queryset):
        return queryset.select_related("owner", "split")

    @extend_schema(parameters=[_EXP_ID])
    def get(self, request, project_id, exp_id):
        return Response(s.ExperimentSerializer(_object(self, ExperimentNotFound)).data)

    @extend_schema(
        parameters=[_EXP_ID], request=s.ExperimentWriteSerializer, responses=s.ExperimentSerializer
    )
    def patch(self, request, project_id, exp_id):
        experiment = _object(self, ExperimentNotFound)
        data = s.ExperimentWriteSerializer(
            data=request.data, partial=True, context=self.get_serializer_context()
        )
        _validated(data)
        experiment = services.experiment_update(
            access=self.access, experiment=experiment, changes=data.changes()
        )
        return Response(s.ExperimentSerializer(experiment).data)

    @extend_schema(parameters=[_EXP_ID], responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, project_id, exp_id):
        experiment = _object(self, ExperimentNotFound)
        services.experiment_delete(experiment=experiment)
        return _deleted("experiment_id", exp_id)


class ExperimentRunView(ProjectScopedAPIView):
    """Start a new run of the experiment (TRAINING_IN_PROGRESS while one is pending/running)."""

    queryset = Experiment.objects.all()
    serializer_class = s.RunSerializer
    lookup_url_kwarg = "exp_id"

    @extend_schema(parameters=[_EXP_ID], request=None, responses=s.RunSerializer)
    def post(self, request, project_id, exp_id):
        run = services.run_start(
            access=self.access, actor=request.user, experiment=_object(self, ExperimentNotFound)
        )
        return Response(s.RunSerializer(run).data)


class ExperimentRunsView(ProjectScopedAPIView):
    """The runs of one experiment, newest first."""

    queryset = Experiment.objects.all()
    serializer_class = s.RunSerializer
    lookup_url_kwarg = "exp_id"

    @extend_schema(parameters=[_EXP_ID], responses=s.RunSerializer(many=True))
    def get(self, request, project_id, exp_id):
        runs = selectors.run_list(access=self.access, experiment=_object(self, ExperimentNotFound))
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(s.RunSerializer(page, many=True).data)


# --- runs ----------------------------------------------------------------------------------------


class RunListView(ProjectScopedAPIView):
    """Runs of the project, newest first (`?experiment_id=`, `?status=`)."""

    queryset = Run.objects.all()
    serializer_class = s.RunSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("experiment_id", OpenApiTypes.STR, description="Only its runs."),
            OpenApiParameter(
                "status", OpenApiTypes.STR, description="pending, running, completed, ..."
            ),
        ],
        responses=s.RunSerializer(many=True),
    )
    def get(self, request, project_id):
        runs = RunFilter.apply(request, selectors.run_list(access=self.access), access=self.access)
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(s.RunSerializer(page, many=True).data)


class _RunView(ProjectScopedAPIView):
    queryset = Run.objects.all()
    serializer_class = s.RunSerializer
    lookup_url_kwarg = "run_id"

    def safely_filter_queryset(self, queryset):
        return queryset.select_related("task", "owner", "experiment", "cluster")

    def run(self) -> Run:
        return _object(self, RunNotFound)


class RunDetailView(_RunView):
    """A run's status and metrics; DELETE removes it with its model and checkpoints."""

    @extend_schema(parameters=[_RUN_ID], responses=s.RunDetailSerializer)
    def get(self, request, project_id, run_id):
        return Response(s.RunDetailSerializer(self.run()).data)

    @extend_schema(parameters=[_RUN_ID], responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, project_id, run_id):
        services.run_delete(run=self.run())
        return _deleted("run_id", run_id)


class RunStopView(_RunView):
    """Stop a run (pending: at once; running: after the current batches)."""

    @extend_schema(parameters=[_RUN_ID], request=None, responses=s.RunSerializer)
    def post(self, request, project_id, run_id):
        return Response(s.RunSerializer(services.run_stop(run=self.run())).data)


class RunResumeView(_RunView):
    """Resume a stopped or failed run from its last checkpoint."""

    @extend_schema(parameters=[_RUN_ID], request=None, responses=s.RunSerializer)
    def post(self, request, project_id, run_id):
        return Response(s.RunSerializer(services.run_resume(run=self.run())).data)


class RunMetricsView(_RunView):
    """The run's per-epoch metrics."""

    @extend_schema(parameters=[_RUN_ID], responses=s.RunMetricsSerializer)
    def get(self, request, project_id, run_id):
        return Response(selectors.run_metrics(run=self.run()))


class EventStreamRenderer(BaseRenderer):
    """Lets clients ask for `text/event-stream` (EventSource does); errors still render JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return EnvelopeJSONRenderer().render(data, "application/json", renderer_context)


class QueryTokenAuthentication(BaseAuthentication):
    """`?token=<access>` for EventSource, which cannot send an Authorization header."""

    def authenticate(self, request):
        raw = request.query_params.get("token")
        if not raw:
            return None
        return user_for_token(raw)


class RunStreamView(_RunView):
    """Server-Sent Events of the run (see apps.training.streams)."""

    renderer_classes = [EnvelopeJSONRenderer, EventStreamRenderer]
    authentication_classes = [JWTAuthentication, QueryTokenAuthentication]

    @extend_schema(
        parameters=[
            _RUN_ID,
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                description="Replay the events after this id (EventSource sends it itself).",
            ),
            OpenApiParameter(
                "token", OpenApiTypes.STR, description="Access token, for EventSource clients."
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT,
                description="Named events status, epoch_end, complete, error; JSON data with "
                "`type`; `id` is the stored event's sequence number.",
            )
        },
    )
    def get(self, request, project_id, run_id):
        run = self.run()
        raw = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id")
        try:
            last_event_id = int(raw) if raw not in (None, "") else 0
            if last_event_id < 0:
                raise ValueError
        except ValueError:
            raise ValidationFailed.for_field(
                "Last-Event-ID", "must be a non-negative integer."
            ) from None
        response = StreamingHttpResponse(
            run_event_stream(
                run_id=run.pk,
                task_id=str(run.task_id) if run.task_id else None,
                last_event_id=last_event_id,
            ),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


# --- evaluations ---------------------------------------------------------------------------------


class EvaluationListView(ProjectScopedAPIView):
    """Evaluations of the project: list; POST creates and starts one."""

    queryset = Evaluation.objects.all()
    serializer_class = s.EvaluationSerializer

    @extend_schema(responses=s.EvaluationSerializer(many=True))
    def get(self, request, project_id):
        page = self.paginate_queryset(selectors.evaluation_list(access=self.access))
        return self.get_paginated_response(s.EvaluationSerializer(page, many=True).data)

    @extend_schema(request=s.EvaluationCreateSerializer, responses=s.EvaluationSerializer)
    def post(self, request, project_id):
        data = s.EvaluationCreateSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        _validated(data)
        values = data.validated_data
        try:
            selectors.experiment_get(access=self.access, exp_id=values["experiment_id"])
        except NotFound:
            raise ExperimentNotFound(f"Experiment {values['experiment_id']} not found.") from None
        try:
            run = selectors.run_get(
                access=self.access, run_id=values["run_id"], experiment_id=values["experiment_id"]
            )
        except NotFound:
            raise RunNotFound(
                f"Run {values['run_id']} not found (or not a run of that experiment)."
            ) from None
        evaluation = services.evaluation_create(
            access=self.access,
            actor=request.user,
            run=run,
            checkpoint=values["checkpoint"],
            dataset=values.get("dataset_id"),
            split_index=values.get("split_index"),
            split_subset=values.get("split_subset"),
            batch_size=values["batch_size"],
            name=values.get("name", ""),
        )
        return Response(s.EvaluationSerializer(evaluation).data)


class _EvaluationView(ProjectScopedAPIView):
    queryset = Evaluation.objects.all()
    serializer_class = s.EvaluationSerializer
    lookup_url_kwarg = "eval_id"

    def safely_filter_queryset(self, queryset):
        return queryset.select_related("task", "owner")


class EvaluationDetailView(_EvaluationView):
    """An evaluation's status and results (accuracy, per-class metrics, confusion matrix)."""

    @extend_schema(parameters=[_EVAL_ID], responses=s.EvaluationDetailSerializer)
    def get(self, request, project_id, eval_id):
        return Response(s.EvaluationDetailSerializer(self.get_object()).data)

    @extend_schema(parameters=[_EVAL_ID], responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, project_id, eval_id):
        services.evaluation_delete(evaluation=self.get_object())
        return _deleted("evaluation_id", eval_id)


def _bool_param(request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationFailed.for_field(name, "must be true or false.")


class EvaluationResultsView(_EvaluationView):
    """Per-item results, paginated, sorted and filtered."""

    @extend_schema(
        parameters=[
            _EVAL_ID,
            OpenApiParameter("sort_by", OpenApiTypes.STR, enum=list(selectors.ITEM_SORTS)),
            OpenApiParameter("sort_order", OpenApiTypes.STR, enum=["asc", "desc"]),
            OpenApiParameter(
                "filter_correct", OpenApiTypes.BOOL, description="true: correct only; false: errors"
            ),
            OpenApiParameter("filter_class", OpenApiTypes.STR, description="Ground-truth class."),
        ],
        responses=s.EvaluationItemSerializer(many=True),
    )
    def get(self, request, project_id, eval_id):
        items = selectors.evaluation_items(
            evaluation=self.get_object(),
            sort_by=request.query_params.get("sort_by") or "filename",
            sort_order=request.query_params.get("sort_order") or "asc",
            filter_correct=_bool_param(request, "filter_correct"),
            filter_class=request.query_params.get("filter_class"),
        )
        page = self.paginate_queryset(items)
        return self.get_paginated_response(page)
