"""The Hanami-compatible REST gateway (`/control/v1/...`): tokens, users, projects and datasets.

Protocol: /work/shared/protocols/hanami.md. Bodies are JSON without a Content-Type, GET/DELETE take
query strings, the token comes raw in `X-Auth-Token`, and the project of project-scoped routes is
the token's `project_id` claim (`project_source = "token"`). Errors: see `apps.hanami.http`.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any, ClassVar

from django.contrib.auth import authenticate
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.accounts import services as accounts
from apps.accounts.models import Membership, Project, User
from apps.accounts.selectors import project_get_for, user_get
from apps.clusters import selectors as clusters_selectors
from apps.clusters import services as clusters
from apps.clusters.models import Checkpoint, Cluster, RequestResult
from apps.core.api.protocol import AnyJSONParser, JSONOnlyNegotiation, PlainJSONRenderer
from apps.core.api.views import GlobalAPIView, ProjectScopedAPIView
from apps.core.exceptions import Forbidden, NotFound, Unauthorized, ValidationFailed
from apps.core.tenancy import ProjectAccess, get_or_not_found, project_access, require_edit
from apps.core.throttling import ScopedRateThrottle, account_key, credential_attempt
from apps.datasets import selectors as datasets_selectors
from apps.datasets import services as datasets
from apps.datasets.models import Dataset, UploadSession
from apps.hanami.http import hanami_exception_handler
from apps.hanami.logs import PAGE_SIZE, audit_record
from apps.hanami.models import AuditEntry, ErrorEntry
from apps.tasks import services as tasks
from apps.tasks.models import Task, target_of

ID_RE = re.compile(r"[a-zA-Z][a-zA-Z_0-9]*")
USER_ID_MAX = 150
PROJECT_ID_MAX = 64


# -- input helpers ----------------------------------------------------------------------------


def _body(request) -> dict:
    data = request.data
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.")
    return data


def _required(data, name: str, kind: type | tuple = str) -> Any:
    value = data.get(name) if hasattr(data, "get") else None
    if value is None or value == "":
        raise ValidationFailed.for_field(name, "is required.")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValidationFailed.for_field(name, "must be an integer.")
    if kind is not int and not isinstance(value, kind):
        raise ValidationFailed.for_field(name, f"must be a {getattr(kind, '__name__', kind)}.")
    return value


def _bool(data, name: str, default: bool = False) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ValidationFailed.for_field(name, "must be true or false.")
    return value


def _hanami_id(value, name: str, max_length: int) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ValidationFailed.for_field(name, "must match [a-zA-Z][a-zA-Z_0-9]*.")
    if len(value) > max_length:
        raise ValidationFailed.for_field(name, f"must be at most {max_length} characters.")
    return value


def _uuid(value, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationFailed.for_field(name, "is required.")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationFailed.for_field(name, "must be a UUID.") from None


def _query(request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ValidationFailed.for_field(name, "is required.")
    return value


def _require_global_admin(user) -> None:
    if not user.is_superuser:
        raise Forbidden("Only admins may do this.")


# -- answers ----------------------------------------------------------------------------------


def _token_answer(user: User, project: Project | None = None) -> dict:
    pair = accounts.token_pair_for(user=user, project=project)
    return {
        "id": user.username,
        "name": user.name or user.username,
        "is_admin": user.is_superuser,
        "token": pair["access"],
    }


def _user_projects(user: User) -> list[dict]:
    return [
        {"project_id": m.project_id, "role": m.role, "is_project_admin": m.is_project_admin}
        for m in Membership.objects.filter(user=user).order_by("project_id")
    ]


def _user_answer(user: User) -> dict:
    return {
        "id": user.username,
        "name": user.name or user.username,
        # Orchard does not record who created a user.
        "creator_id": "",
        "is_admin": user.is_superuser,
        "projects": _user_projects(user),
    }


def _project_answer(project: Project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "creator_id": project.created_by.username if project.created_by else "",
    }


def _dataset_answer(dataset: Dataset) -> dict:
    inputs = 1
    for dim in dataset.input_shape or [0]:
        inputs *= int(dim)
    return {
        "uuid": str(dataset.pk),
        "name": dataset.name,
        "type": dataset.kind,
        "inputs": inputs,
        "outputs": dataset.num_classes or 0,
        "lines": dataset.num_samples,
        # Relative to the server's data directory: the absolute path is not the caller's business.
        "location": f"{dataset.project_id}/datasets/{dataset.pk}",
        "owner_id": dataset.owner.username if dataset.owner else "",
        "project_id": dataset.project_id,
        "visibility": dataset.visibility,
        "state": dataset.status,
        "error": dataset.error,
    }


def _table(header: list[str], rows) -> dict:
    return {"header": header, "body": [list(r) for r in rows]}


# -- bases ------------------------------------------------------------------------------------


class HanamiMixin:
    parser_classes: ClassVar[list] = [AnyJSONParser]
    renderer_classes: ClassVar[list] = [PlainJSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation
    pagination_class = None
    filter_backends: ClassVar[list] = []

    def get_exception_handler(self):
        return hanami_exception_handler

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        audit_record(request, response.status_code)
        return response


@extend_schema(exclude=True)
class HanamiGlobalView(HanamiMixin, GlobalAPIView):
    """A gateway route outside any one project (tokens, users, projects)."""

    tenancy_exempt_reason = "Hanami user/project administration and tokens (global admin or self)"


def hanami_project_access(*, user, project_id) -> ProjectAccess:
    """The token's project; when it no longer exists (deleted, as the SDK's own test does with
    every project), the user's home project: Hanami users always work in one."""
    try:
        return project_access(user=user, project_id=project_id)
    except NotFound:
        if not user or not user.is_authenticated:
            raise
        if isinstance(project_id, str) and Project.objects.filter(pk=project_id).exists():
            raise  # a real project that is not the caller's: no fallback
        home = accounts.home_project_for(user=user)
        return project_access(user=user, project_id=home.pk)


@extend_schema(exclude=True)
class HanamiView(HanamiMixin, ProjectScopedAPIView):
    """A gateway route inside the token's project."""

    project_source = "token"
    token_project_access = staticmethod(hanami_project_access)
    queryset = Dataset.objects.all()


# -- tokens -----------------------------------------------------------------------------------


class TokenView(HanamiGlobalView):
    """POST {id, password} -> token; PUT {project_id} -> a token for another project."""

    tenancy_exempt_reason = "login and token renewal happen before a project is chosen"
    permission_classes: ClassVar[list] = [AllowAny]
    throttle_scope = "login"

    def get_authenticators(self):
        if self.request is not None and self.request.method == "POST":
            return []
        return super().get_authenticators()

    def get_throttles(self):
        if self.request is not None and self.request.method == "POST":
            return [ScopedRateThrottle()]
        return []

    def post(self, request):
        data = _body(request)
        user_id = _required(data, "id")
        password = _required(data, "password")
        with credential_attempt(request, account=account_key(user_id)) as attempt:
            user = authenticate(request, username=user_id, password=password)
            if user is None:
                raise Unauthorized("Invalid user id or password.")
            attempt.succeeded()
        return Response(_token_answer(user))

    def put(self, request):
        if not request.user or not request.user.is_authenticated:
            raise Unauthorized("Missing token.")
        project_id = _required(_body(request), "project_id")
        project = project_access(user=request.user, project_id=project_id).project
        return Response(_token_answer(request.user, project))


# -- users ------------------------------------------------------------------------------------


class UserView(HanamiGlobalView):
    tenancy_exempt_reason = "user administration is global (global admins only)"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        _require_global_admin(request.user)

    def post(self, request):
        data = _body(request)
        user_id = _hanami_id(_required(data, "id"), "id", USER_ID_MAX)
        name = _required(data, "name")
        password = _required(data, "password")
        user = accounts.user_create(
            username=user_id, password=password, name=name, is_admin=_bool(data, "is_admin")
        )
        return Response(_user_answer(user))

    def get(self, request):
        user_id = _hanami_id(_query(request, "id"), "id", USER_ID_MAX)
        return Response(_user_answer(user_get(username=user_id)))

    def delete(self, request):
        user_id = _hanami_id(_query(request, "id"), "id", USER_ID_MAX)
        accounts.user_delete(user=user_get(username=user_id), actor=request.user)
        return Response({})


class UserListView(UserView):
    def get(self, request):
        rows = [
            (u["id"], u["name"], u["creator_id"], u["projects"], u["is_admin"])
            for u in (_user_answer(user) for user in User.objects.order_by("username"))
        ]
        return Response(_table(["id", "name", "creator_id", "projects", "is_admin"], rows))


class UserProjectView(HanamiGlobalView):
    """Memberships: admins add/remove; everyone lists their own and switches project."""

    tenancy_exempt_reason = (
        "memberships are managed by global admins; listing shows only the caller's"
    )

    def get(self, request):
        rows = [
            (p["project_id"], p["role"], p["is_project_admin"])
            for p in _user_projects(request.user)
        ]
        return Response(_table(["project_id", "role", "is_project_admin"], rows))

    def post(self, request):
        data = _body(request)
        if set(data) == {"project_id"}:
            # The SDK's switch_project posts here; same as PUT token.
            project = project_access(user=request.user, project_id=data["project_id"]).project
            return Response(_token_answer(request.user, project))
        _require_global_admin(request.user)
        user_id = _hanami_id(_required(data, "id"), "id", USER_ID_MAX)
        project_id = _hanami_id(_required(data, "project_id"), "project_id", PROJECT_ID_MAX)
        role = data.get("role") or "member"
        if not isinstance(role, str):
            raise ValidationFailed.for_field("role", "must be a string.")
        user = user_get(username=user_id)
        project = project_get_for(user=request.user, project_id=project_id)
        accounts.membership_add(
            project=project,
            user=user,
            role=role,
            is_project_admin=_bool(data, "is_project_admin"),
        )
        return Response(_user_answer(user))

    def delete(self, request):
        _require_global_admin(request.user)
        user_id = _hanami_id(_query(request, "id"), "id", USER_ID_MAX)
        project_id = _hanami_id(_query(request, "project_id"), "project_id", PROJECT_ID_MAX)
        user = user_get(username=user_id)
        project = project_get_for(user=request.user, project_id=project_id)
        accounts.membership_remove(project=project, user=user)
        return Response(_user_answer(user))


# -- projects ---------------------------------------------------------------------------------


class ProjectView(HanamiGlobalView):
    tenancy_exempt_reason = "project administration is global (global admins only)"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        _require_global_admin(request.user)

    def post(self, request):
        data = _body(request)
        project_id = _hanami_id(_required(data, "id"), "id", PROJECT_ID_MAX)
        name = _required(data, "name")
        project = accounts.project_create(actor=request.user, name=name, project_id=project_id)
        return Response(_project_answer(project))

    def get(self, request):
        project_id = _hanami_id(_query(request, "id"), "id", PROJECT_ID_MAX)
        return Response(_project_answer(project_get_for(user=request.user, project_id=project_id)))

    def delete(self, request):
        project_id = _hanami_id(_query(request, "id"), "id", PROJECT_ID_MAX)
        accounts.project_delete(project=project_get_for(user=request.user, project_id=project_id))
        return Response({})


class ProjectListView(ProjectView):
    def get(self, request):
        projects = Project.objects.select_related("created_by").order_by("id")
        rows = [(p["id"], p["name"], p["creator_id"]) for p in map(_project_answer, projects)]
        return Response(_table(["id", "name", "creator_id"], rows))


# -- datasets ---------------------------------------------------------------------------------


class _DatasetBase(HanamiView):
    def _dataset(self, value, name: str = "uuid", *, edit: bool = False) -> Dataset:
        dataset = datasets_selectors.dataset_get(access=self.access, dataset_id=_uuid(value, name))
        if edit:
            require_edit(self.access, dataset)
        return dataset


def _create_pending(access, name: str, kind: str, sizes: dict[str, int]) -> tuple[Dataset, dict]:
    """A pending dataset with one upload session per role; no files are left behind on error."""
    sessions: dict[str, UploadSession] = {}
    try:
        with transaction.atomic():
            for role, size in sizes.items():
                sessions[role] = datasets.upload_session_create(
                    project=access.project, actor=access.user, size=size, filename=f"{name}-{role}"
                )
            dataset = datasets.dataset_create_pending(
                project=access.project, actor=access.user, name=name, kind=kind, uploads=sessions
            )
    except BaseException:
        for session in sessions.values():
            session.path.unlink(missing_ok=True)
        raise
    return dataset, {role: str(s.pk) for role, s in sessions.items()}


class _UploadDatasetView(_DatasetBase):
    kind: ClassVar[str]
    # role -> (size field of POST, uuid field of POST answer / PUT body)
    files: ClassVar[dict[str, tuple[str, str]]]

    def post(self, request):
        data = _body(request)
        name = _required(data, "name")
        sizes = {}
        for role, (size_field, _) in self.files.items():
            size = _required(data, size_field, int)
            if size < 1:
                raise ValidationFailed.for_field(size_field, "must be positive.")
            sizes[role] = size
        dataset, uploads = _create_pending(self.access, name, self.kind, sizes)
        answer = {"uuid": str(dataset.pk), "name": dataset.name}
        for role, (_, uuid_field) in self.files.items():
            answer[uuid_field] = uploads[role]
        return Response(answer)

    def put(self, request):
        data = _body(request)
        dataset = self._dataset(data.get("uuid"), edit=True)
        if dataset.kind != self.kind:
            raise ValidationFailed.for_field("uuid", f"is not a {self.kind} dataset.")
        roles = {str(s.pk): s.role for s in dataset.uploads.all()}
        for role, (_, uuid_field) in self.files.items():
            file_uuid = _uuid(data.get(uuid_field), uuid_field)
            if roles.get(file_uuid) != role:
                raise NotFound(f"{uuid_field}: upload not found for this dataset.")
        dataset = datasets.dataset_finalize_upload(dataset=dataset)
        return Response(_dataset_answer(dataset))


class MnistDatasetView(_UploadDatasetView):
    kind = Dataset.Kind.MNIST
    files: ClassVar = {
        "images": ("input_data_size", "uuid_input_file"),
        "labels": ("label_data_size", "uuid_label_file"),
    }


class CsvDatasetView(_UploadDatasetView):
    kind = Dataset.Kind.CSV
    files: ClassVar = {"file": ("input_data_size", "uuid_input_file")}


class DatasetProgressView(_DatasetBase):
    def get(self, request):
        dataset = self._dataset(_query(request, "uuid"))
        sessions = list(dataset.uploads.all())
        temp_files = {str(s.pk): (s.received_bytes / s.size if s.size else 1.0) for s in sessions}
        if dataset.status == Dataset.Status.UPLOADING:
            complete = all(s.complete for s in sessions)
        else:
            complete = True
        return Response(
            {
                "uuid": str(dataset.pk),
                "complete": complete,
                "state": dataset.status,
                "temp_files": temp_files,
            }
        )


class DatasetView(_DatasetBase):
    def get(self, request):
        return Response(_dataset_answer(self._dataset(_query(request, "uuid"))))

    def delete(self, request):
        dataset = self._dataset(_query(request, "uuid"), edit=True)
        datasets.dataset_delete(dataset=dataset)
        return Response({})


class DatasetListView(_DatasetBase):
    def get(self, request):
        qs = datasets_selectors.dataset_list(access=self.access).select_related("owner")
        rows = [
            (
                str(d.pk),
                d.project_id,
                d.owner.username if d.owner else "",
                d.visibility,
                d.name,
                d.kind,
            )
            for d in qs
        ]
        return Response(
            _table(["uuid", "project_id", "owner_id", "visibility", "name", "type"], rows)
        )


# -- clusters ---------------------------------------------------------------------------------


def _timestamp(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _owned_answer(obj) -> dict:
    return {
        "name": obj.name,
        "owner_id": obj.owner.username if obj.owner else "",
        "project_id": obj.project_id,
        "uuid": str(obj.pk),
        "visibility": obj.visibility,
    }


def _owned_rows(queryset) -> dict:
    rows = [
        (str(o.pk), o.project_id, o.owner.username if o.owner else "", o.visibility, o.name)
        for o in queryset.select_related("owner")
    ]
    return _table(["uuid", "project_id", "owner_id", "visibility", "name"], rows)


def host_uuid(host_id: str) -> str:
    """Hosts are named ("cpu", "gpu-0"); the protocol wants UUIDs: a stable one per name."""
    return str(uuid.uuid5(HOST_NAMESPACE, host_id))


HOST_NAMESPACE = uuid.UUID("6f1d3c5e-3b9a-4f5e-9a57-0c2b7d1e8a40")


class _ClusterBase(HanamiView):
    queryset = Cluster.objects.all()

    def _cluster(self, value, name: str = "uuid", *, edit: bool = False) -> Cluster:
        cluster = clusters_selectors.cluster_get(access=self.access, cluster_id=_uuid(value, name))
        if edit:
            require_edit(self.access, cluster)
        return cluster


class ClusterView(_ClusterBase):
    """POST {name, template (base64)}; GET/DELETE [uuid]."""

    def post(self, request):
        data = _body(request)
        name = _required(data, "name")
        encoded = _required(data, "template")
        try:
            template = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ValidationFailed.for_field(
                "template", "must be the base64 of the template text."
            ) from None
        self.access.require_write()
        cluster = clusters.cluster_create(
            project=self.access.project, actor=request.user, name=name, template_text=template
        )
        return Response(_owned_answer(cluster))

    def get(self, request):
        return Response(_owned_answer(self._cluster(_query(request, "uuid"))))

    def delete(self, request):
        clusters.cluster_delete(cluster=self._cluster(_query(request, "uuid"), edit=True))
        return Response({})


class ClusterListView(_ClusterBase):
    def get(self, request):
        return Response(_owned_rows(clusters_selectors.cluster_list(access=self.access)))


class ClusterSaveView(_ClusterBase):
    """POST {name, cluster_uuid} -> the new checkpoint {uuid, name}."""

    def post(self, request):
        data = _body(request)
        name = _required(data, "name")
        # Saving a checkpoint changes the cluster's history: the same rule as the main API.
        cluster = self._cluster(data.get("cluster_uuid"), "cluster_uuid", edit=True)
        checkpoint = clusters.checkpoint_save(cluster=cluster, actor=request.user, name=name)
        return Response({"uuid": str(checkpoint.pk), "name": checkpoint.name})


class ClusterLoadView(_ClusterBase):
    """POST {checkpoint_uuid, cluster_uuid}: restore a checkpoint into a cluster."""

    def post(self, request):
        data = _body(request)
        checkpoint = clusters_selectors.checkpoint_get(
            access=self.access, checkpoint_id=_uuid(data.get("checkpoint_uuid"), "checkpoint_uuid")
        )
        cluster = self._cluster(data.get("cluster_uuid"), "cluster_uuid", edit=True)
        clusters.checkpoint_restore(checkpoint=checkpoint, cluster=cluster)
        return Response({"uuid": str(cluster.pk)})


class ClusterModeView(_ClusterBase):
    """PUT {new_state: DIRECT|TASK, uuid}; DIRECT needs an empty task queue (409)."""

    def put(self, request):
        data = _body(request)
        new_state = _required(data, "new_state")
        if new_state not in ("DIRECT", "TASK"):
            raise ValidationFailed.for_field("new_state", "must be DIRECT or TASK.")
        cluster = self._cluster(data.get("uuid"), edit=True)
        cluster = clusters.cluster_set_mode(cluster=cluster, mode=new_state)
        return Response(_owned_answer(cluster))


class ClusterHostView(_ClusterBase):
    """PUT {cluster_uuid, host_uuid}: the cluster's next tasks run on that host."""

    def put(self, request):
        data = _body(request)
        cluster = self._cluster(data.get("cluster_uuid"), "cluster_uuid", edit=True)
        wanted = _required(data, "host_uuid")
        host_id = next(
            (h.pk for h in clusters.host_refresh() if wanted in (h.pk, host_uuid(h.pk))), None
        )
        if host_id is None:
            raise NotFound("Host not found.")
        cluster = clusters.cluster_switch_host(cluster=cluster, host_id=host_id)
        return Response(_owned_answer(cluster))


# -- tasks ------------------------------------------------------------------------------------

TASK_TYPES = ("train", "request")
# Hanami knows no "failed": a failed task shows as aborted (with its error beside it).
_HANAMI_STATE = {"failed": "aborted"}


def _task_state(task: Task) -> str:
    return _HANAMI_STATE.get(task.state, task.state)


class _TaskBase(_ClusterBase):
    queryset = Task.objects.all()

    def _task(self, request) -> Task:
        task_id = _uuid(_query(request, "uuid"), "uuid")
        cluster_id = request.query_params.get("cluster_uuid")
        lookup = {"pk": task_id}
        if cluster_id:
            lookup["target_type"] = clusters.CLUSTER_TARGET
            lookup["target_id"] = _uuid(cluster_id, "cluster_uuid")
        return get_or_not_found(Task.objects.visible_to(self.access), **lookup)


class TaskView(_TaskBase):
    """POST {name, type, cluster_uuid, dataset_uuid}; GET/DELETE [uuid, cluster_uuid]."""

    def post(self, request):
        data = _body(request)
        name = _required(data, "name")
        kind = _required(data, "type")
        if kind not in TASK_TYPES:
            raise ValidationFailed.for_field("type", "must be train or request.")
        cluster = self._cluster(data.get("cluster_uuid"), "cluster_uuid")
        dataset = datasets_selectors.dataset_get(
            access=self.access, dataset_id=_uuid(data.get("dataset_uuid"), "dataset_uuid")
        )
        clusters.require_task_rights(access=self.access, kind=kind, cluster=cluster)
        task = clusters.cluster_task_create(
            project=self.access.project,
            actor=request.user,
            kind=kind,
            name=name,
            cluster=cluster,
            dataset=dataset,
        )
        return Response({"uuid": str(task.pk), "name": task.name})

    def get(self, request):
        task = self._task(request)
        answer = {
            "end_timestamp": _timestamp(task.finished_at),
            "percentage_finished": task.progress,
            "queue_timestamp": _timestamp(task.queued_at),
            "start_timestamp": _timestamp(task.started_at),
            "state": _task_state(task),
        }
        if task.state == "failed":
            answer["error"] = task.error
        return Response(answer)

    def delete(self, request):
        task = self._task(request)
        require_edit(self.access, task)
        tasks.task_delete(task=task)
        return Response({})


class TaskListView(_TaskBase):
    def get(self, request):
        cluster = self._cluster(_query(request, "cluster_uuid"), "cluster_uuid")
        queryset = (
            Task.objects.visible_to(self.access).filter(**target_of(cluster)).order_by("sequence")
        )
        rows = [
            (
                str(t.pk),
                _task_state(t),
                f"{t.progress:.6f}",
                _timestamp(t.queued_at),
                _timestamp(t.started_at),
                _timestamp(t.finished_at),
            )
            for t in queryset
        ]
        return Response(_table(["uuid", "state", "percentage", "queued", "start", "end"], rows))


# -- request results, checks, checkpoints, hosts ----------------------------------------------


class _ResultBase(HanamiView):
    queryset = RequestResult.objects.all()

    def _result(self, value, name: str = "uuid") -> RequestResult:
        return RequestResult.objects.get_visible(self.access, pk=_uuid(value, name))


class RequestResultView(_ResultBase):
    def get(self, request):
        result = self._result(_query(request, "uuid"))
        classes = clusters.request_result_classes(result)
        return Response({**_owned_answer(result), "data": classes.tolist()})

    def delete(self, request):
        result = self._result(_query(request, "uuid"))
        require_edit(self.access, result)
        clusters.request_result_delete(result=result)
        return Response({})


class RequestResultListView(_ResultBase):
    def get(self, request):
        return Response(_owned_rows(RequestResult.objects.visible_to(self.access)))


class DatasetCheckView(_ResultBase):
    """POST {result_uuid, dataset_uuid} -> {accuracy} in percent.

    The SDK has sent this check both ways: `request_result.check_against_dataset` POSTs a body,
    the older `dataset.check_mnist_dataset` GETs with `?dataset_uuid=..&result_uuid=..`.
    """

    def post(self, request):
        return self._check(_body(request))

    def get(self, request):
        return self._check(request.query_params)

    def _check(self, data):
        result = self._result(data.get("result_uuid"), "result_uuid")
        dataset = datasets_selectors.dataset_get(
            access=self.access, dataset_id=_uuid(data.get("dataset_uuid"), "dataset_uuid")
        )
        return Response({"accuracy": clusters.request_result_check(result=result, dataset=dataset)})


class CheckpointView(HanamiView):
    queryset = Checkpoint.objects.all()

    def delete(self, request):
        checkpoint = clusters_selectors.checkpoint_get(
            access=self.access, checkpoint_id=_uuid(_query(request, "uuid"), "uuid")
        )
        require_edit(self.access, checkpoint)
        clusters.checkpoint_delete(checkpoint=checkpoint)
        return Response({})


class CheckpointListView(CheckpointView):
    def get(self, request):
        return Response(_owned_rows(clusters_selectors.checkpoint_list(access=self.access)))


class HostListView(HanamiGlobalView):
    tenancy_exempt_reason = "hosts are the machine's devices, shared by every project"

    def get(self, request):
        rows = [(host_uuid(h.pk), h.kind) for h in clusters.host_refresh()]
        return Response(_table(["uuid", "type"], rows))


# -- logs -------------------------------------------------------------------------------------


class _LogView(HanamiGlobalView):
    """GET [user_id, page]: admins read anyone's log, others only their own."""

    tenancy_exempt_reason = "logs are per user: global admins read all, users their own"
    header: ClassVar[list[str]]

    def get(self, request):
        user_id = request.query_params.get("user_id") or request.user.username
        user_id = _hanami_id(user_id, "user_id", USER_ID_MAX)
        if user_id != request.user.username:
            _require_global_admin(request.user)
        raw_page = request.query_params.get("page", "0")
        try:
            page = int(raw_page)
        except ValueError:
            raise ValidationFailed.for_field("page", "must be an integer.") from None
        if page < 0:
            raise ValidationFailed.for_field("page", "must be 0 or more.")
        start = page * PAGE_SIZE
        entries = self.model.objects.filter(user__username=user_id)[start : start + PAGE_SIZE]
        return Response(_table(self.header, [self.row(e, user_id) for e in entries]))


class AuditLogView(_LogView):
    model = AuditEntry
    header: ClassVar = ["timestamp", "user_id", "endpoint", "request_type"]

    @staticmethod
    def row(entry, user_id):
        return (_timestamp(entry.created_at), user_id, entry.endpoint, entry.request_type)


class ErrorLogView(_LogView):
    model = ErrorEntry
    header: ClassVar = ["timestamp", "user_id", "component", "context", "values"]

    @staticmethod
    def row(entry, user_id):
        return (_timestamp(entry.created_at), user_id, entry.component, entry.context, entry.values)
