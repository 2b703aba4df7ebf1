"""napari-labelprop's server protocol at the root paths (auto-included by config/urls.py).

Protocol: /work/shared/protocols/labelprop.md (upstream: nathandecaux/labelprop `api.py`; client:
napari-labelprop-remote). The client calls `http://HOST:PORT/<route>` with no prefix and no
credentials, so the surface is off unless LABELPROP_ENABLED, answers only the client addresses
of LABELPROP_ALLOWED_CLIENTS, and acts as the service user LABELPROP_USER inside the project
LABELPROP_PROJECT, whose role decides what it may do (POST routes need a writer). A request
carrying an Origin header (a browser) is refused (403) unless that origin's host is in
ALLOWED_HOSTS or it is listed in LABELPROP_ALLOWED_ORIGINS: the client sends no Origin.

`/inference` and `/training` answer a session token at once; the work runs as a task on the job
engine and the client polls `/get_session_list` (finished and failed sessions) then downloads the
npz. No route waits for a task. A refused request is answered the token of a failed session
too (with the refusal's status), whose download is the reason: the client shows it. Answers
are plain text (see `http.py`), except the npz bytes of `/download_inference` and the JSON of
`/get_session_info`.
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny

from apps.core.api.views import GlobalAPIView
from apps.core.clientip import client_ip
from apps.core.exceptions import Conflict, Forbidden
from apps.core.safeio import memory_guard
from apps.mlbackend.labelprop import reading, selectors, services, storage
from apps.mlbackend.labelprop.http import (
    PlainTextRenderer,
    TextNegotiation,
    header_safe,
    labelprop_exception_handler,
    status_and_message,
    text,
)
from apps.mlbackend.models import LabelpropSessionKind, LabelpropSessionState

logger = logging.getLogger(__name__)


def _part(request, name: str):
    """A multipart part sent as a file (what the client does) or as a plain field."""
    upload = request.FILES.get(name)
    if upload is not None:
        return upload
    value = request.data.get(name) if hasattr(request.data, "get") else None
    return value


def _bytes(part, limit: int) -> bytes | None:
    """A part's bytes, at most `limit` + 1 of them (the reader refuses more)."""
    if part is None:
        return None
    if hasattr(part, "read"):
        return part.read(limit + 1)
    data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
    return data[: limit + 1]


@extend_schema(exclude=True)
class LabelpropView(GlobalAPIView):
    """Base of every labelprop route: resolves `self.access` for the bound project."""

    tenancy_exempt_reason = (
        "napari-labelprop sends no credentials: the surface is off unless LABELPROP_ENABLED, "
        "bound to LABELPROP_PROJECT and acting as LABELPROP_USER (resolved with project_access), "
        "and every row it reads or writes is scoped with visible_to() for that access"
    )
    authentication_classes: ClassVar[list] = []
    permission_classes: ClassVar[list] = [AllowAny]
    throttle_classes: ClassVar[list] = []
    parser_classes: ClassVar[list] = [MultiPartParser, FormParser]
    renderer_classes: ClassVar[list] = [PlainTextRenderer]
    content_negotiation_class = TextNegotiation

    @staticmethod
    def too_large_answer(caller, url_name: str, message: str):
        """The body-limit 413 that apps.core.middleware answers before any view runs: labelprop
        answers short texts."""
        return "text/plain; charset=utf-8", message.encode()

    def get_exception_handler(self):
        return labelprop_exception_handler

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.access = selectors.gateway_access(remote_addr=client_ip(request))
        # A web page in a browser on an allowed client machine could otherwise drive the
        # surface (no credentials, no CSRF token): a foreign Origin is refused on every route.
        if not selectors.origin_allowed(request.META.get("HTTP_ORIGIN")):
            raise Forbidden(
                "Cross-site request refused: its Origin is neither in ALLOWED_HOSTS nor in "
                "LABELPROP_ALLOWED_ORIGINS."
            )


class CheckView(LabelpropView):
    """GET /check -> Hello World!"""

    def get(self, request):
        return text("Hello World!")


class ListCheckpointsView(LabelpropView):
    """GET /list_ckpts -> the current directory's checkpoint names, comma-joined."""

    def get(self, request):
        return text(",".join(selectors.checkpoint_names(access=self.access)))


class ListHashView(LabelpropView):
    """GET /list_hash -> the hashes of the stored volumes, comma-joined."""

    def get(self, request):
        return text(",".join(selectors.volume_hashes(access=self.access)))


class GetCheckpointDirView(LabelpropView):
    """GET /get_ckpt_dir -> the current checkpoint directory (a name in project storage)."""

    def get(self, request):
        return text(selectors.ckpt_dir(access=self.access))


class SetCheckpointDirView(LabelpropView):
    """POST /set_ckpt_dir?ckpt_dir=NAME (empty body) -> ok"""

    def post(self, request):
        services.ckpt_dir_set(access=self.access, name=request.query_params.get("ckpt_dir"))
        return text("ok")


class SendCheckpointView(LabelpropView):
    """POST /send_ckpt, multipart part `ckpt` named after the checkpoint -> ok"""

    accepts_uploads = True  # bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)

    def post(self, request):
        upload = request.FILES.get("ckpt")
        services.checkpoint_upload(
            access=self.access,
            filename=getattr(upload, "name", None),
            fileobj=upload,
        )
        return text("ok")


class _SessionStartView(LabelpropView):
    """`/inference` and `/training`. The napari client takes whatever body it is answered for a
    session token and polls `/get_session_list` until that text appears in it, whatever the
    status: a refusal answered as an error text would leave it polling forever. So once the
    surface has resolved its access (a refusal of the whole surface, 404 / 503 / a cross-site
    403, reads the same on every route, `/get_session_list` included, and ends the loop by
    itself), every refusal keeps its status but its body is the token of a session failed
    from the start, whose `/download_inference` text is the reason (also in the
    `X-Labelprop-Error` header for other clients)."""

    kind: ClassVar[str]
    accepts_uploads = True  # the npz volumes: bodies up to UPLOAD_MAX_BYTES (apps.core.middleware)

    @staticmethod
    def too_large_answer(caller, url_name: str, message: str):
        """The body-limit 413 that apps.core.middleware answers before any view runs: a failed
        session's token too (see the class docstring), else the plain text."""
        token = body_too_large(caller, url_name, message)
        return "text/plain; charset=utf-8", (token or message).encode()

    def initial(self, request, *args, **kwargs):
        self._refusal_tokens = False
        super().initial(request, *args, **kwargs)
        self._refusal_tokens = True

    def handle_exception(self, exc):
        if getattr(self, "_refusal_tokens", False) and not isinstance(exc, MethodNotAllowed):
            status, message = status_and_message(exc)
            if status == 500:
                logger.error("labelprop %s refused with 500", self.kind, exc_info=exc)
            session = services.session_refuse(
                access=self.access,
                kind=self.kind,
                status=status,
                message=message,
                params=getattr(self, "_params", None),
            )
            if session is not None:
                response = text(str(session.pk), status)
                response["X-Labelprop-Error"] = header_safe(message)
                return response
        return super().handle_exception(exc)

    def post(self, request):
        self.access.require_write()
        with memory_guard("arrays", "LABELPROP_MAX_VOXELS"):
            params = reading.read_params(_bytes(_part(request, "params"), reading.MAX_PARAMS_BYTES))
            self._params = params
            with reading.read_npz(_part(request, "arrays")) as arrays:
                session = services.session_start(
                    access=self.access, kind=self.kind, arrays=arrays, params=params
                )
        return text(str(session.pk))


class InferenceView(_SessionStartView):
    """POST /inference (multipart `arrays` npz + `params` JSON) -> session token"""

    kind = LabelpropSessionKind.INFERENCE


class TrainingView(_SessionStartView):
    """POST /training (multipart `arrays` npz + `params` JSON) -> session token"""

    kind = LabelpropSessionKind.TRAINING


class SessionListView(LabelpropView):
    """GET /get_session_list -> tokens of finished or failed sessions, comma-joined."""

    def get(self, request):
        return text(",".join(selectors.sessions_done(access=self.access)))


class DownloadInferenceView(LabelpropView):
    """GET|POST /download_inference?token= -> npz bytes (Y_up, Y_down, Y_fused), or a short
    error text (the client shows it as "Server-side error: ...")."""

    def get(self, request):
        session = selectors.session_get(access=self.access, token=request.query_params.get("token"))
        state, error = selectors.session_state(session)
        if state == LabelpropSessionState.FAILED:
            raise Conflict(f"Session failed: {error}")
        if state != LabelpropSessionState.FINISHED:
            raise Conflict("Session not finished yet.")
        path = storage.session_dir(session) / storage.RESULT_FILE
        if not path.exists():
            raise Conflict("Session failed: its results are missing.")
        return FileResponse(path.open("rb"), content_type="application/octet-stream")

    def post(self, request):  # upstream accepts both
        return self.get(request)


class SessionInfoView(LabelpropView):
    """GET /get_session_info?token= -> the session's params as JSON."""

    def get(self, request):
        session = selectors.session_get(access=self.access, token=request.query_params.get("token"))
        response = text(json.dumps(session.params))
        response["Content-Type"] = "application/json"
        return response


_SESSION_ROUTES = {
    "labelprop-inference": LabelpropSessionKind.INFERENCE,
    "labelprop-training": LabelpropSessionKind.TRAINING,
}


def body_too_large(request_or_scope, url_name: str, message: str) -> str | None:
    """The body of the 413 that `apps.core.middleware` answers, before any view runs, for a
    labelprop route whose body is over UPLOAD_MAX_BYTES: for `/inference` and `/training`, the
    token of a refused session (so the napari client shows `message` instead of polling for
    it forever) when the surface answers this caller; None otherwise (the plain message).
    Takes a request or an ASGI scope; touches the database (call it through sync_to_async
    from async code)."""
    kind = _SESSION_ROUTES.get(url_name)
    if kind is None:
        return None
    if isinstance(request_or_scope, dict):
        headers = dict(request_or_scope.get("headers") or [])
        origin = headers.get(b"origin")
        origin = origin.decode("latin-1") if origin is not None else None
    else:
        origin = request_or_scope.META.get("HTTP_ORIGIN")
    try:
        access = selectors.gateway_access(remote_addr=client_ip(request_or_scope))
    except Exception:  # off, not allowed or misconfigured: the plain text
        return None
    if not selectors.origin_allowed(origin):
        return None
    session = services.session_refuse(access=access, kind=kind, status=413, message=message)
    return str(session.pk) if session is not None else None
