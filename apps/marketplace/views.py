"""The Morpheo orchestrator gateway under `/orchestrator/` (protocol: shared/protocols/morpheo.md).

Every route answers the protocol's own JSON (see `apps.marketplace.http` for errors). Callers
authenticate with HTTP Basic (an Orchard user or compute service account) or a studio JWT; the
project is the one `apps.marketplace.http.project_for_account` resolves (or the token's claim),
through the scoped base view (`project_source = "token"`), so tenancy is the platform's.

Roles: reads need a membership, creating problems/algos/data/predictions a writing role, and the
compute routes (worker, learndone, preddone) a compute account: a service account with a writing
role in the project, or a project admin. A learndone/preddone must come from the account that
claimed the uplet (a project admin may close anyone's).
"""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.accounts.authentication import JWTAuthentication
from apps.core.api.protocol import AnyJSONParser, JSONOnlyNegotiation, PlainJSONRenderer
from apps.core.api.views import GlobalAPIView, ProjectScopedAPIView
from apps.core.exceptions import Conflict, Forbidden, NotFound, ValidationFailed
from apps.core.tenancy import fetch_visible
from apps.marketplace import selectors, services
from apps.marketplace.http import OrchestratorBasicAuthentication, orchestrator_exception_handler
from apps.marketplace.models import Learnuplet, Preduplet, UpletStatus
from apps.marketplace.protocol import DOCUMENTS, Body

FINISH_CHOICES = (UpletStatus.DONE.value, UpletStatus.FAILED.value)


class OrchestratorMixin:
    authentication_classes: ClassVar[list] = [OrchestratorBasicAuthentication, JWTAuthentication]
    parser_classes: ClassVar[list] = [AnyJSONParser]
    renderer_classes: ClassVar[list] = [PlainJSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation
    pagination_class = None
    filter_backends: ClassVar[list] = []
    # OPTIONS answers 405 like any other method the protocol does not have.
    metadata_class = None

    def get_exception_handler(self):
        return orchestrator_exception_handler


@extend_schema(exclude=True)
class OrchestratorView(OrchestratorMixin, ProjectScopedAPIView):
    """A route inside the caller's project."""

    project_source = "token"
    collection: ClassVar[str] = ""

    @property
    def spec(self) -> selectors.Collection:
        return selectors.COLLECTIONS[self.collection]

    def require_compute(self) -> None:
        access = self.access
        if access.is_admin or (access.user.is_service_account and access.can_write):
            return
        raise Forbidden(
            "Only compute accounts (service accounts of the project) or project admins may do this."
        )

    def document(self, obj) -> dict:
        return DOCUMENTS[self.collection](obj)

    def lookup(self, value: str):
        """The visible uplet/document `value` names, or NotFound (also for a malformed uuid)."""
        return fetch_visible(self.get_queryset(), self.access, uuid=value)

    def lookup_for_update(self, value: str, what: str):
        """The visible uplet `value` names, for the compute routes (worker, learndone,
        preddone): an unknown uplet (a malformed uuid, another project's) answers 400, as
        upstream does, with upstream's message ("no update of learnuplet <uuid>")."""
        try:
            return self.lookup(value)
        except NotFound:
            raise Conflict(f"{what} {value[:64]}: no such {self.collection}.") from None


# --- collections and documents ---------------------------------------------------------------


class _CollectionView(OrchestratorView):
    def get(self, request):
        rows = selectors.collection_list(
            access=self.access, collection=self.spec, filters=request.query_params
        )
        return Response({f"{self.collection}s": [self.document(r) for r in rows]})


class _DocumentView(OrchestratorView):
    def get(self, request, **kwargs):
        uuid = next(iter(kwargs.values()))
        obj = selectors.document_get(access=self.access, collection=self.spec, uuid=uuid)
        return Response(self.document(obj))


class ProblemCollectionView(_CollectionView):
    """GET /problem; POST /problem {uuid, workflow, test_dataset, size_train_dataset}."""

    collection = "problem"
    queryset = selectors.COLLECTIONS["problem"].model.objects.all()

    def post(self, request):
        body = Body(request.data, {"uuid", "workflow", "test_dataset", "size_train_dataset"})
        problem = services.problem_create(
            access=self.access,
            uuid=body.uuid("uuid"),
            workflow=body.uuid("workflow"),
            test_dataset=body.uuids("test_dataset", empty=False),
            size_train_dataset=body.positive_int("size_train_dataset"),
        )
        return Response({"new_problem": self.document(problem)}, status=201)


class ProblemDocumentView(_DocumentView):
    collection = "problem"
    queryset = selectors.COLLECTIONS["problem"].model.objects.all()


class AlgoCollectionView(_CollectionView):
    """GET /algo; POST /algo {uuid, name, problem}."""

    collection = "algo"
    queryset = selectors.COLLECTIONS["algo"].model.objects.all()

    def post(self, request):
        body = Body(request.data, {"uuid", "name", "problem"})
        algo, created = services.algo_create(
            access=self.access,
            uuid=body.uuid("uuid"),
            name=body.string("name"),
            problem_uuid=body.uuid("problem"),
        )
        return Response({"new_algo": self.document(algo), "new_learnuplets": created}, status=201)


class AlgoDocumentView(_DocumentView):
    collection = "algo"
    queryset = selectors.COLLECTIONS["algo"].model.objects.all()


class DataCollectionView(_CollectionView):
    """GET /data; POST /data {uuid: uuid or [uuids], problems: uuid or [uuids]}."""

    collection = "data"
    queryset = selectors.COLLECTIONS["data"].model.objects.all()

    def post(self, request):
        body = Body(request.data, {"uuid", "problems"})
        rows, created = services.data_create(
            access=self.access,
            uuids=body.uuids("uuid", single=True, empty=False),
            problem_uuids=body.uuids("problems", single=True),
        )
        return Response(
            {"new_datas": [self.document(r) for r in rows], "new_learnuplets": created},
            status=201,
        )


class DataDocumentView(_DocumentView):
    collection = "data"
    queryset = selectors.COLLECTIONS["data"].model.objects.all()


class LearnupletCollectionView(_CollectionView):
    collection = "learnuplet"
    queryset = Learnuplet.objects.all()


class PredupletCollectionView(_CollectionView):
    collection = "preduplet"
    queryset = Preduplet.objects.all()


class _UpletDocumentView(_DocumentView):
    """GET /<uplet>/<uuid>; POST {status: "failed"} marks it failed (compute only): the Go
    client's `UpdateUpletStatus(..., "failed", ...)` posts exactly that to this path."""

    def post(self, request, **kwargs):
        self.require_compute()
        uplet = self.lookup(next(iter(kwargs.values())))
        body = Body(request.data, {"status"})
        body.choice("status", (UpletStatus.FAILED.value,))
        return _report_failed(self, uplet)


class LearnupletDocumentView(_UpletDocumentView):
    collection = "learnuplet"
    queryset = Learnuplet.objects.all()


class PredupletDocumentView(_UpletDocumentView):
    collection = "preduplet"
    queryset = Preduplet.objects.all()


def _report_failed(view: OrchestratorView, uplet):
    access = view.access
    if isinstance(uplet, Learnuplet):
        services.learnuplet_report(
            uplet=uplet, account=access.user, status=UpletStatus.FAILED, as_admin=access.is_admin
        )
        return Response({"updated_learnuplet": str(uplet.uuid)})
    services.preduplet_report(
        uplet=uplet, account=access.user, status=UpletStatus.FAILED, as_admin=access.is_admin
    )
    return Response({"updated_preduplet": str(uplet.uuid)})


# --- predictions -----------------------------------------------------------------------------


class PredictionView(OrchestratorView):
    """POST /prediction {data: uuid, problem} -> 201 with the preduplet document (upstream's
    later version, the Go client's `OrchestratorPrediction`); {data: [uuids], problem} -> 201
    {"new_preduplets": 1} (the protocol page's form: one preduplet over the list)."""

    collection = "preduplet"
    queryset = Preduplet.objects.all()

    def post(self, request):
        body = Body(request.data, {"data", "problem"})
        data = body.uuid_or_uuids("data")
        preduplet = services.prediction_create(
            access=self.access, data=data, problem_uuid=body.uuid("problem")
        )
        if isinstance(data, str):
            return Response(self.document(preduplet), status=201)
        return Response({"new_preduplets": 1}, status=201)


# --- compute routes --------------------------------------------------------------------------


class _WorkerView(OrchestratorView):
    """POST /worker/<uplet>/<uuid> {worker}: todo -> pending (compute only); 400 if not todo.

    The Go client's `UpdateUpletStatus(..., "pending", ...)` sends `{"status": "pending"}`
    instead of a worker: accepted, with the zero uuid as worker. An unknown uplet is 400.
    """

    tenancy_denied_statuses = (400,)

    def post(self, request, **kwargs):
        self.require_compute()
        value = next(iter(kwargs.values()))
        uplet = self.lookup_for_update(value, f"worker not set for {self.collection}")
        body = Body(request.data, {"worker", "status"})
        body.choice("status", (UpletStatus.PENDING.value,), required=False)
        if not body.has("worker") and not body.has("status"):
            raise ValidationFailed.for_field("worker", "is required.")
        worker = body.uuid("worker", required=False) or "00000000-0000-0000-0000-000000000000"
        services.uplet_claim(uplet=uplet, worker=worker, account=self.access.user)
        return Response({f"{self.collection}_worker_set": str(uplet.uuid)})


class LearnupletWorkerView(_WorkerView):
    collection = "learnuplet"
    queryset = Learnuplet.objects.all()


class PredupletWorkerView(_WorkerView):
    collection = "preduplet"
    queryset = Preduplet.objects.all()


class LearnDoneView(OrchestratorView):
    """POST /learndone/<uuid> {status: done, perf, train_perf, test_perf} or {status: failed}.
    `done` is accepted for a pending uplet and for a failed one (a late success, as upstream)."""

    collection = "learnuplet"
    queryset = Learnuplet.objects.all()
    # An unknown uplet (also another project's) is 400, as upstream answers.
    tenancy_denied_statuses = (400,)

    def post(self, request, learnuplet_uuid):
        self.require_compute()
        uplet = self.lookup_for_update(learnuplet_uuid, "no update of learnuplet")
        body = Body(request.data, {"status", "perf", "train_perf", "test_perf"})
        status = body.choice("status", FINISH_CHOICES)
        if status == UpletStatus.FAILED:
            return _report_failed(self, uplet)
        services.learnuplet_report(
            uplet=uplet,
            account=self.access.user,
            status=status,
            perf=body.number("perf"),
            train_perf=body.perfs("train_perf"),
            test_perf=body.perfs("test_perf"),
            as_admin=self.access.is_admin,
        )
        return Response({"updated_learnuplet": str(uplet.uuid)})


class PredDoneView(OrchestratorView):
    """POST /preddone/<uuid> {status, prediction_storage_uuid}."""

    collection = "preduplet"
    queryset = Preduplet.objects.all()
    tenancy_denied_statuses = (400,)

    def post(self, request, preduplet_uuid):
        self.require_compute()
        uplet = self.lookup_for_update(preduplet_uuid, "no update of preduplet")
        body = Body(request.data, {"status", "prediction_storage_uuid"})
        status = body.choice("status", FINISH_CHOICES)
        services.preduplet_report(
            uplet=uplet,
            account=self.access.user,
            status=status,
            prediction_storage_uuid=body.uuid(
                "prediction_storage_uuid", required=status == UpletStatus.DONE
            ),
            as_admin=self.access.is_admin,
        )
        return Response({"updated_preduplet": str(uplet.uuid)})


# --- anything else under the prefix ----------------------------------------------------------


@extend_schema(exclude=True)
class UnknownRouteView(OrchestratorMixin, GlobalAPIView):
    """Any other path under /orchestrator/: 404 in the protocol's format."""

    tenancy_exempt_reason = "answers 404 for unknown orchestrator paths; reads and writes nothing"
    authentication_classes: ClassVar[list] = []
    permission_classes: ClassVar[list] = [AllowAny]

    def _missing(self, request, *args, **kwargs):
        raise NotFound("Page does not exist.")

    get = post = put = patch = delete = _missing
