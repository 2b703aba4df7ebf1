"""The Label Studio ML backend protocol at `/ml/<backend id>/...` (auto-included at the root).

Protocol: /work/shared/protocols/label-studio.md. Label Studio pastes `http://HOST/ml/<id>` as
the backend URL and calls `health` (and `/`), `setup`, `predict`, `webhook`, `versions`,
`metrics`, and the old `train` / `is_training`. Answers are plain JSON in the protocol's shapes,
errors `{"status", "detail"}` (see `http.py`).

There is no Orchard user here: the backend id names the backend, and when the backend has Basic
credentials every route (health included, like label-studio-ml-backend) needs them. Every route
is also served under the backend's secret URL `/ml/<id>/s/<secret>/`: a wrong secret is 401, and
the right one authenticates `webhook` alone (Label Studio sends webhooks without credentials;
pasting the secret URL into Label Studio makes the webhook it creates carry the secret). The
views only parse, call one service and answer.
"""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.core.api.protocol import AnyJSONParser, JSONOnlyNegotiation, PlainJSONRenderer
from apps.core.api.views import GlobalAPIView
from apps.core.clientip import client_ident
from apps.core.exceptions import NotFound, ValidationFailed
from apps.mlbackend.labelstudio import auth, predict, selectors, services, training
from apps.mlbackend.labelstudio.http import labelstudio_exception_handler

MODEL_CLASS = "OrchardClassifier"


def _body(request) -> dict:
    data = request.data
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.")
    return data


@extend_schema(exclude=True)
class LabelStudioView(GlobalAPIView):
    """Base of every protocol route: resolves and authenticates `self.backend`."""

    tenancy_exempt_reason = (
        "Label Studio calls as no Orchard user: the backend id in the URL and the backend's "
        "own Basic credentials are the scope, and only that backend's rows are touched"
    )
    # A caller without the backend's credentials gets 401 (the protocol's answer), an unknown
    # backend 404; tests/test_tenancy.py accepts these for this surface.
    tenancy_denied_statuses: ClassVar[tuple[int, ...]] = (401, 404)
    authentication_classes: ClassVar[list] = []
    permission_classes: ClassVar[list] = [AllowAny]
    throttle_classes: ClassVar[list] = []
    parser_classes: ClassVar[list] = [AnyJSONParser]
    renderer_classes: ClassVar[list] = [PlainJSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation

    def get_exception_handler(self):
        return labelstudio_exception_handler

    # Routes a right secret URL authenticates without Basic credentials.
    secret_is_enough = False

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.backend = selectors.backend_for_gateway(kwargs.get("backend_id", ""))
        auth.backend_authenticate(
            backend=self.backend,
            authorization=request.META.get("HTTP_AUTHORIZATION"),
            client=client_ident(request),
            secret=kwargs.get("secret"),
            webhook=self.secret_is_enough,
        )


class HealthView(LabelStudioView):
    """GET /health and GET /: up, without loading any model."""

    def get(self, request, backend_id, secret=None):
        return Response(
            {
                "status": "UP",
                "model_class": MODEL_CLASS,
                "model_version": self.backend.model_version,
            }
        )


class SetupView(LabelStudioView):
    """POST /setup {project, schema, hostname, access_token, extra_params} -> {model_version}."""

    def post(self, request, backend_id, secret=None):
        data = _body(request)
        return Response(
            services.backend_setup(
                backend=self.backend,
                project=data.get("project"),
                schema=data.get("schema"),
                hostname=data.get("hostname"),
                access_token=data.get("access_token"),
                extra_params=data.get("extra_params"),
            )
        )


class PredictView(LabelStudioView):
    """POST /predict {tasks, project, label_config, params} -> {results: [one per task]}."""

    def post(self, request, backend_id, secret=None):
        data = _body(request)
        return Response(
            predict.backend_predict(
                backend=self.backend,
                tasks=data.get("tasks"),
                label_config=data.get("label_config"),
                params=data.get("params"),
                model_version=data.get("model_version"),
                project=data.get("project"),
            )
        )


class WebhookView(LabelStudioView):
    """POST /webhook {action, annotation, task, project} -> 201 {result, status: ok}."""

    secret_is_enough = True

    def post(self, request, backend_id, secret=None):
        status, answer = training.backend_webhook(backend=self.backend, payload=request.data)
        return Response(answer, status=status)


class VersionsView(LabelStudioView):
    """GET /versions (and the old POST {project}) -> {versions: [...]}."""

    def get(self, request, backend_id, secret=None):
        return self._answer(request.query_params.get("project"))

    def post(self, request, backend_id, secret=None):
        return self._answer(_body(request).get("project"))

    def _answer(self, project):
        scope = services.scope_for(self.backend, project, create=False)
        return Response({"versions": selectors.version_names(backend=self.backend, scope=scope)})


class MetricsView(LabelStudioView):
    """GET /metrics -> a small JSON summary."""

    def get(self, request, backend_id, secret=None):
        return Response(
            {
                "model_version": self.backend.model_version,
                "annotations": selectors.annotation_list(backend=self.backend).count(),
            }
        )


class TrainView(LabelStudioView):
    """Old POST /train {annotations: [tasks with annotations], project, label_config, params}
    -> 201 {job}; 400 when there are no annotations."""

    def post(self, request, backend_id, secret=None):
        answer = training.backend_train_legacy(backend=self.backend, payload=request.data)
        return Response(answer, status=201)


class IsTrainingView(LabelStudioView):
    """Old GET /is_training?project= -> {is_training, model_version, job, status, progress}."""

    def get(self, request, backend_id, secret=None):
        return Response(
            training.backend_training_status(
                backend=self.backend, project=request.query_params.get("project")
            )
        )


class UnknownRouteView(LabelStudioView):
    """Anything else under /ml/<id>/: a JSON 404 (Label Studio shows the body; never HTML)."""

    def _unknown(self, request, backend_id, secret=None):
        raise NotFound(f"No such ML backend route: {request.path}")

    get = post = put = patch = delete = _unknown
