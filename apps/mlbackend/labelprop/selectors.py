"""Reads of the labelprop half: the surface's access (setting-bound project and service user),
volumes by hash, checkpoints of the current directory, sessions and their state.

Every read goes through `visible_to(access)` for the bound project's service identity.
"""

from __future__ import annotations

import ipaddress
import logging
import unicodedata
import uuid
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Q
from django.http.request import validate_host

from apps.core.conf import setting
from apps.core.exceptions import NotFound
from apps.core.tenancy import ProjectAccess, project_access
from apps.mlbackend.labelprop.http import Misconfigured
from apps.mlbackend.models import (
    DEFAULT_CKPT_DIR,
    LabelpropCheckpoint,
    LabelpropSession,
    LabelpropSessionState,
    LabelpropVolume,
    LabelpropWorkspace,
)
from apps.tasks.models import TERMINAL_STATES

logger = logging.getLogger(__name__)

# `/get_session_list` names at most this many sessions (the newest); the client polls for the
# token it was just given.
SESSION_LIST_LIMIT = 1000


# --- the surface's access ------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple | None:
    """The allowed client networks; None allows every address ("*")."""
    networks = []
    for entry in entries:
        entry = entry.strip()
        if entry == "*":
            return None
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            logger.warning("LABELPROP_ALLOWED_CLIENTS: ignoring %r (not an address)", entry)
    return tuple(networks)


def client_allowed(remote_addr: str | None) -> bool:
    """Whether a client address is in LABELPROP_ALLOWED_CLIENTS (addresses or networks)."""
    networks = _networks(tuple(setting("LABELPROP_ALLOWED_CLIENTS") or ()))
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def origin_allowed(origin: str | None) -> bool:
    """Whether a request's Origin header may reach the surface.

    The napari client (like curl) sends no Origin, so a request without one is allowed. A
    browser always sends one on cross-site requests: it must name a host of ALLOWED_HOSTS
    (patterns as Django reads them, except the bare wildcard "*", which says any Host header
    may be served, not that every web site may drive this surface) or be listed in
    LABELPROP_ALLOWED_ORIGINS (full origins such as "https://viewer.example:8443", or host
    names). "null" (sandboxed frames, file pages) is never allowed.
    """
    if origin is None:
        return True
    origin = origin.strip().lower()
    raw = setting("LABELPROP_ALLOWED_ORIGINS") or []
    entries = raw.split(",") if isinstance(raw, str) else raw  # the environment: comma-joined
    listed = [str(e).strip().lower().rstrip("/") for e in entries if str(e).strip()]
    if origin in listed:
        return True
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host in listed:
        return True
    patterns = [h for h in settings.ALLOWED_HOSTS if h != "*"]
    return validate_host(host, patterns)


def gateway_access(*, remote_addr: str | None) -> ProjectAccess:
    """The rights of the surface's service identity in its bound project.

    Off (LABELPROP_ENABLED false) or a client outside LABELPROP_ALLOWED_CLIENTS: NotFound, as if
    the routes did not exist. Enabled with an unknown user or project, or a user who is not a
    member of the project: Misconfigured (503).
    """
    from apps.accounts.models import User

    if not setting("LABELPROP_ENABLED") or not client_allowed(remote_addr):
        raise NotFound("Not found.")
    username = setting("LABELPROP_USER") or ""
    project_id = setting("LABELPROP_PROJECT") or ""
    user = User.objects.filter(username=username, is_active=True).first() if username else None
    if user is None or not project_id:
        logger.error("labelprop: LABELPROP_USER and LABELPROP_PROJECT must name an active user")
        raise Misconfigured("labelprop is misconfigured: set LABELPROP_PROJECT and LABELPROP_USER.")
    try:
        return project_access(user=user, project_id=project_id)
    except NotFound:
        logger.error("labelprop: %s is not a member of project %s", username, project_id)
        raise Misconfigured(
            "labelprop is misconfigured: LABELPROP_USER is not a member of LABELPROP_PROJECT."
        ) from None


# --- checkpoints -------------------------------------------------------------------------------


def ckpt_dir(*, access: ProjectAccess) -> str:
    """The project's current checkpoint directory (a name inside its storage)."""
    row = LabelpropWorkspace.objects.visible_to(access).first()
    return row.ckpt_dir if row is not None else DEFAULT_CKPT_DIR


def checkpoint_names(*, access: ProjectAccess) -> list[str]:
    """Names of the checkpoints of the current directory, sorted."""
    return list(
        LabelpropCheckpoint.objects.visible_to(access)
        .filter(directory=ckpt_dir(access=access))
        .order_by("name")
        .values_list("name", flat=True)
    )


def checkpoint_get(*, access: ProjectAccess, name: str) -> LabelpropCheckpoint:
    """A checkpoint of the current directory by name; a path is reduced to its last part (the
    client may send one), so nothing outside the project's storage is ever named."""
    base = unicodedata.normalize("NFC", str(name).replace("\\", "/").rsplit("/", 1)[-1].strip())
    return LabelpropCheckpoint.objects.get_visible(
        access, directory=ckpt_dir(access=access), name=base
    )


# --- volumes -----------------------------------------------------------------------------------


def volume_hashes(*, access: ProjectAccess) -> list[str]:
    return list(
        LabelpropVolume.objects.visible_to(access)
        .order_by("created_at")
        .values_list("hash", flat=True)
    )


def volume_get(*, access: ProjectAccess, hash: str) -> LabelpropVolume:
    return LabelpropVolume.objects.get_visible(access, hash=str(hash).lower())


# --- sessions ----------------------------------------------------------------------------------


def session_get(*, access: ProjectAccess, token: str | None) -> LabelpropSession:
    """A session by its token; a malformed token is unknown, like a missing or foreign one."""
    try:
        token_id = uuid.UUID(str(token))
    except ValueError:
        raise NotFound("Unknown token.") from None
    try:
        return LabelpropSession.objects.visible_to(access).select_related("task").get(pk=token_id)
    except LabelpropSession.DoesNotExist:
        raise NotFound("Unknown token.") from None


def session_state(session: LabelpropSession) -> tuple[str, str]:
    """(state, error) of a session: its own once decided, else what its task says."""
    if session.state != LabelpropSessionState.PENDING:
        return session.state, session.error
    task = session.task
    if task is None:
        return LabelpropSessionState.FAILED, session.error or "The session has no task."
    if task.state in TERMINAL_STATES:
        return LabelpropSessionState.FAILED, task.error or f"The task was {task.state}."
    return LabelpropSessionState.PENDING, ""


def _done_filter() -> Q:
    return (
        Q(state__in=[LabelpropSessionState.FINISHED, LabelpropSessionState.FAILED])
        | Q(task__state__in=list(TERMINAL_STATES))
        | Q(task__isnull=True)
    )


def sessions_done(*, access: ProjectAccess) -> list[str]:
    """Tokens of the finished or failed sessions (newest first, at most SESSION_LIST_LIMIT)."""
    ids = (
        LabelpropSession.objects.visible_to(access)
        .filter(_done_filter())
        .order_by("-created_at")
        .values_list("pk", flat=True)[:SESSION_LIST_LIMIT]
    )
    return [str(pk) for pk in ids]
