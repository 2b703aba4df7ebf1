"""Compute push: uplets that become runnable are POSTed to the project's compute API, exactly as
upstream's orchestrator does (`app/tasks.py` `post_uplet`): `POST {url}/learn` with the
learnuplet document, `POST {url}/pred` with the preduplet document, as the JSON text of the
document (upstream's `json.dumps` of it). The compute API (morpheo-compute `api/main.go`) answers
202 and puts the uplet in its workers' queue; its workers then claim and report through
`/orchestrator/` as usual.

Delivery is at-least-once and never happens inside a request:
- `push_if_configured` runs inside the transaction that made the uplet runnable; it writes a
  `ComputePush` row (the outbox: url, exact body, state) and a `compute_push` task of the job
  engine, both committed with the uplet or not at all. The job engine re-sends queued tasks whose
  message was lost and re-queues tasks whose worker died (`task_sweep`), so a restart never
  loses a push.
- Headers: `Content-Type: application/json` (what go-packages' compute client sends; upstream's
  Python `requests.post(data=...)` sent none, and the compute API reads the body as JSON either
  way), `User-Agent: Orchard-orchestrator`, no credentials (upstream sent none).
- The `compute_push` handler POSTs the body; a 2xx answer marks the row delivered. A network
  error, a timeout, 408, 429 or 5xx is retried with exponential backoff
  (`MARKETPLACE_COMPUTE_PUSH_BACKOFF_S` doubling up to `MARKETPLACE_COMPUTE_PUSH_BACKOFF_MAX_S`)
  up to `MARKETPLACE_COMPUTE_PUSH_ATTEMPTS` attempts in all; any other answer (the compute API
  refusing the uplet, a redirect) or a refused address fails the push at once. A failed push
  fails its task; the admin's "Retry" action queues it again. The uplet stays `todo` either
  way, so an HTTP worker polling `/orchestrator/` may still take it.
- A redelivered push (a worker died after the POST but before marking it) reaches the compute
  twice; its claim (`POST /worker/...`) lets exactly one of the copies run.

Addresses follow Orchard's outbound rules (`apps.core.outbound`): http(s) only,
no credentials in the URL, every address the host resolves to is checked and the connection is
pinned to a checked one; private, loopback and link-local addresses are refused unless the
`MARKETPLACE_COMPUTE_ALLOW_PRIVATE` setting is on (an operator's decision, not a project's).
Redirects are not followed. `MARKETPLACE_COMPUTE_PUSH_TIMEOUT_S` bounds one POST.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.core.conf import number_setting, setting
from apps.core.exceptions import Conflict, OrchardError, ValidationFailed
from apps.core.outbound import FetchFailed, FetchRefused, check_address, pinned_request, url_origin
from apps.marketplace.models import ComputeEndpoint, ComputePush, Learnuplet, PushState
from apps.marketplace.protocol import learnuplet_document, preduplet_document

if TYPE_CHECKING:
    from apps.marketplace.models import Preduplet

logger = logging.getLogger(__name__)

PUSH_KIND = "compute_push"
USER_AGENT = "Orchard-orchestrator"
# Routes of the compute API (morpheo-compute api/main.go, go-packages client/compute.go).
ROUTES = {ComputePush.Kind.LEARN: "learn", ComputePush.Kind.PRED: "pred"}
# Answers worth another attempt; any other non-2xx answer is final.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
ANSWER_MAX_BYTES = 64 * 1024
REFUSED_HINT = (
    "private, loopback and link-local addresses need the MARKETPLACE_COMPUTE_ALLOW_PRIVATE "
    "setting; reserved, multicast and unspecified ones are never reached"
)


def allow_private() -> bool:
    """`MARKETPLACE_COMPUTE_ALLOW_PRIVATE` (default off): push to private/loopback addresses."""
    value = setting("MARKETPLACE_COMPUTE_ALLOW_PRIVATE")
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# --- the endpoint --------------------------------------------------------------------------------


def normalize_url(url: Any) -> str:
    """A compute API base URL as pushes use it (no trailing slash), or ValidationFailed: http(s),
    a host, no credentials, query or fragment; an IP literal must be an address pushes may
    reach (host names are checked at every push, after resolving)."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed.for_field("url", "must be a non-empty http(s) URL.")
    url = url.strip()
    if len(url) > 500:
        raise ValidationFailed.for_field("url", "must be at most 500 characters.")
    try:
        _scheme, host, _port = url_origin(url)
    except FetchRefused as exc:
        raise ValidationFailed.for_field("url", exc.message) from None
    if "?" in url or "#" in url:
        raise ValidationFailed.for_field("url", "must not have a query or a fragment.")
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        try:
            check_address(str(literal), allow_private=allow_private())
        except FetchRefused:
            raise ValidationFailed.for_field(
                "url",
                "is a private, loopback, link-local or reserved address; the server's "
                "MARKETPLACE_COMPUTE_ALLOW_PRIVATE setting must allow it.",
            ) from None
    return url.rstrip("/")


@transaction.atomic
def compute_endpoint_set(*, access, url: Any, enabled: bool = True) -> ComputeEndpoint:
    """Point the project's uplets at a compute API (project admins only). Disabled, the
    built-in compute takes the project's waiting uplets, as after `compute_endpoint_delete`."""
    from apps.marketplace.dispatch import uplets_dispatch_waiting

    access.require_admin()
    url = normalize_url(url)
    endpoint, _ = ComputeEndpoint.objects.select_for_update().update_or_create(
        project=access.project,
        defaults={"url": url, "enabled": bool(enabled), "owner": access.user},
    )
    if not endpoint.enabled:
        uplets_dispatch_waiting(project_id=access.project.pk)
    return endpoint


@transaction.atomic
def compute_endpoint_delete(*, access) -> None:
    """Back to the built-in compute (project admins only): it takes the `todo` uplets that were
    pushed to the compute API and that it can run (the claim lets one worker have each)."""
    from apps.marketplace.dispatch import uplets_dispatch_waiting

    access.require_admin()
    ComputeEndpoint.objects.filter(project=access.project).delete()
    uplets_dispatch_waiting(project_id=access.project.pk)


def endpoint_url(project_id: str) -> str | None:
    """The enabled compute API base URL of a project, or None."""
    return (
        ComputeEndpoint.objects.filter(project_id=project_id, enabled=True)
        .values_list("url", flat=True)
        .first()
    )


# --- enqueueing ----------------------------------------------------------------------------------


def push_body(uplet: Learnuplet | Preduplet) -> str:
    """The exact JSON text upstream posts: `json.dumps` of the uplet document."""
    if isinstance(uplet, Learnuplet):
        return json.dumps(learnuplet_document(uplet))
    return json.dumps(preduplet_document(uplet))


def push_if_configured(uplet: Learnuplet | Preduplet) -> ComputePush | None:
    """When the uplet's project has a compute API, record a push of the uplet's document as it
    is now (in the caller's transaction) and return it; else None."""
    url = endpoint_url(uplet.project_id)
    if url is None:
        return None
    kind = ComputePush.Kind.LEARN if isinstance(uplet, Learnuplet) else ComputePush.Kind.PRED
    return push_enqueue(uplet=uplet, kind=kind, base_url=url)


@transaction.atomic
def push_enqueue(*, uplet: Learnuplet | Preduplet, kind: str, base_url: str) -> ComputePush:
    from apps.tasks.services import task_create

    push = ComputePush.objects.create(
        project_id=uplet.project_id,
        owner_id=uplet.owner_id,
        kind=kind,
        uplet_uuid=uplet.uuid,
        url=f"{base_url}/{ROUTES[kind]}",
        body=push_body(uplet),
    )
    push.task = task_create(
        project=push.project,
        actor=uplet.owner,
        kind=PUSH_KIND,
        name=f"push {ROUTES[kind]} {uplet.uuid}",
        params={"push_id": push.pk},
    )
    push.save(update_fields=["task", "updated_at"])
    return push


@transaction.atomic
def push_retry(*, push: ComputePush) -> ComputePush:
    """Queue a failed push again, attempts reset, to the project's compute API as it is now
    (an admin may have fixed its URL meanwhile); the same body. Conflict unless it failed."""
    from apps.tasks.services import task_create, task_retry

    fields: dict[str, Any] = {"state": PushState.PENDING, "attempts": 0, "last_error": ""}
    base_url = endpoint_url(push.project_id)
    if base_url is not None:
        fields["url"] = f"{base_url}/{ROUTES[push.kind]}"
    if not ComputePush.objects.filter(pk=push.pk, state=PushState.FAILED).update(
        updated_at=timezone.now(), **fields
    ):
        raise Conflict(f"{push} is not failed.")
    push.refresh_from_db()
    task = push.task
    if task is not None and task.state in ("failed", "aborted"):
        task_retry(task=task)
    elif task is None or task.is_terminal:
        push.task = task_create(
            project=push.project,
            actor=push.owner,
            kind=PUSH_KIND,
            name=f"push {ROUTES[push.kind]} {push.uplet_uuid}",
            params={"push_id": push.pk},
        )
        push.save(update_fields=["task", "updated_at"])
    return push


# --- delivering ----------------------------------------------------------------------------------


class _Outcome:
    DELIVERED, RETRY, FINAL = "delivered", "retry", "final"


def _post(push: ComputePush) -> tuple[str, int | None, str]:
    """One POST of the push: (outcome, HTTP status or None, error text)."""
    timeout = number_setting("MARKETPLACE_COMPUTE_PUSH_TIMEOUT_S")
    try:
        origin = url_origin(push.url)
        status, _location, _answer = pinned_request(
            "POST",
            push.url,
            origin,
            {"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            allow_private=allow_private(),
            max_bytes=ANSWER_MAX_BYTES,
            deadline=time.monotonic() + timeout,
            body=push.body.encode(),
        )
    except FetchRefused as exc:
        return _Outcome.FINAL, None, f"refused ({REFUSED_HINT}): {exc.message}"
    except FetchFailed as exc:
        return _Outcome.RETRY, None, exc.detail
    except OrchardError as exc:  # an answer over ANSWER_MAX_BYTES: it was received
        return _Outcome.DELIVERED, 200, exc.message
    if 200 <= status < 300:
        return _Outcome.DELIVERED, status, ""
    if status >= 500 or status in RETRYABLE_STATUSES:
        return _Outcome.RETRY, status, f"the compute API answered HTTP {status}"
    return _Outcome.FINAL, status, f"the compute API answered HTTP {status}"


def push_attempt(*, push: ComputePush) -> str:
    """Make one delivery attempt of a pending push and record it; returns the outcome
    ("delivered", "retry" or "final"; also "final" when it is not pending any more)."""
    if push.state != PushState.PENDING:
        return _Outcome.FINAL
    outcome, status, error = _post(push)
    now = timezone.now()
    push.attempts += 1
    push.last_status = status
    push.last_error = error[:2000]
    push.last_attempt_at = now
    fields = ["attempts", "last_status", "last_error", "last_attempt_at", "updated_at"]
    if outcome == _Outcome.DELIVERED:
        push.state, push.delivered_at = PushState.DELIVERED, now
        fields += ["state", "delivered_at"]
    elif outcome == _Outcome.FINAL or push.attempts >= _max_attempts():
        push.state = PushState.FAILED
        fields.append("state")
    push.save(update_fields=fields)
    if outcome != _Outcome.DELIVERED:
        logger.warning(
            "compute push %s to %s: attempt %s: %s", push.pk, push.url, push.attempts, error
        )
    return outcome if push.state != PushState.FAILED else _Outcome.FINAL


def _max_attempts() -> int:
    return max(1, int(number_setting("MARKETPLACE_COMPUTE_PUSH_ATTEMPTS")))


def backoff_s(attempts: int) -> float:
    """The wait after `attempts` failed attempts: the base, doubled each time, capped."""
    base = number_setting("MARKETPLACE_COMPUTE_PUSH_BACKOFF_S")
    cap = number_setting("MARKETPLACE_COMPUTE_PUSH_BACKOFF_MAX_S")
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def compute_push(ctx) -> dict[str, Any]:
    """The `compute_push` task: deliver one push, retrying with backoff (see the module)."""
    from apps.tasks.context import TaskStopped

    push = ComputePush.objects.get(pk=ctx.params["push_id"])
    pause = threading.Event()
    while push.state == PushState.PENDING:
        ctx.check()
        outcome = push_attempt(push=push)
        if outcome == _Outcome.RETRY:
            # Progress (an event) only when there is more to come: a push's last attempt is
            # followed at once by the task's own finished or failed event.
            ctx.progress(push.attempts / _max_attempts(), attempts=push.attempts)
            wait = backoff_s(push.attempts)
            # Wait in short slices: an abort or a worker shutdown interrupts the backoff.
            while wait > 0:
                if ctx.should_stop():
                    raise TaskStopped()
                step = min(wait, 0.5)
                pause.wait(step)
                wait -= step
                ctx.progress(push.attempts / _max_attempts(), attempts=push.attempts)
        if push.state != PushState.DELIVERED:
            # Read it again: a "Retry" while this job was ending made it pending once more (a
            # delivered push is never retried, nothing to read).
            push.refresh_from_db()
    result = {
        "push": push.pk,
        "url": push.url,
        "state": push.state,
        "attempts": push.attempts,
        "last_status": push.last_status,
    }
    if push.state == PushState.FAILED:
        raise ValidationFailed(
            f"push to {push.url} failed after {push.attempts} attempt(s): {push.last_error}"
        )
    return result


def _validate(*, params: dict[str, Any]) -> None:
    push_id = params.get("push_id")
    if isinstance(push_id, bool) or not isinstance(push_id, int) or set(params) != {"push_id"}:
        raise ValidationFailed.for_field(
            "params", "must be {push_id: <int>} (set by the marketplace)."
        )


def register_kind() -> None:
    from apps.tasks import registry

    registry.register(
        PUSH_KIND,
        compute_push,
        time_limit_s=3600,
        max_attempts=3,
        validate=_validate,
    )
