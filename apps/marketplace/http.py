"""HTTP plumbing of the `/orchestrator/` gateway: JSON in and out whatever the headers say, Basic
auth mapped to Orchard accounts, and errors as the protocol writes them: `{"Error": message}`.

| error                                                             | status |
|-------------------------------------------------------------------|--------|
| malformed JSON, unknown fields, wrong types, bad uuids (ValidationFailed) and state conflicts (an uplet that is not todo / pending: Conflict) | 400 |
| missing or wrong credentials                                      | 401 (`WWW-Authenticate: Basic realm="orchestrator"`) |
| too many failed credential checks (AUTH_FAILURE_RATE) per client address or account | 429 (`Retry-After`) |
| a role that may not do this (a viewer writing, a non-compute account on a compute route) | 403 |
| an unknown route or document uuid (also another project's)        | 404 |
| an unknown uplet on `worker/`, `learndone/`, `preddone/` (upstream's answer) | 400 |
| a known route with another method                                 | 405 |
| anything else (logged, message hidden)                            | 500 |
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.authentication import BasicAuthentication
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from apps.core.api.protocol import error_message
from apps.core.conf import setting
from apps.core.errors import json_answer
from apps.core.exceptions import (
    Conflict,
    Forbidden,
    NotFound,
    OrchardError,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from apps.core.throttling import account_key, credential_attempt

logger = logging.getLogger(__name__)

PROJECT_HEADER = "HTTP_X_ORCHARD_PROJECT"


# --- authentication --------------------------------------------------------------------------


class OrchestratorBasicAuthentication(BasicAuthentication):
    """HTTP Basic credentials of an Orchard account (a person or a compute service account).

    The request's project (what `request.auth["project_id"]` carries to the scoped base view) is,
    in order: the `X-Orchard-Project` header, the `MARKETPLACE_PROJECT` setting, or the account's
    only project. An account of several projects without either is refused (403). Membership is
    still checked by the scoped base, so a header naming a foreign project answers 404.

    Every check is throttled per client address and per account name (`AUTH_FAILURE_RATE`, see
    `apps.core.throttling`): past it, 429 `{"Error": ...}` with `Retry-After`, before any password
    hash. Successful credentials are remembered for `MARKETPLACE_BASIC_AUTH_CACHE_S` seconds (default
    60, 0: off) under an HMAC of user and password, so that polling workers do not pay a password
    hash per request; a changed password or a deactivated account is noticed at once.
    """

    www_authenticate_realm = "orchestrator"

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        return user, {"project_id": project_for_account(user, request), "scheme": "basic"}

    def authenticate_credentials(self, userid, password, request=None):
        # Throttled first (AUTH_FAILURE_RATE per client and per account), even for remembered
        # credentials: a remembered success must not answer guesses faster than the hasher would.
        with credential_attempt(request, account=account_key(userid)) as attempt:
            user, auth = self._check(userid, password, request)
            attempt.succeeded()
        return user, auth

    def _check(self, userid, password, request):
        ttl = int(setting("MARKETPLACE_BASIC_AUTH_CACHE_S"))
        key = _credentials_key(userid, password)
        if ttl > 0:
            user = _cached_user(cache.get(key))
            if user is not None:
                return user, None
        user, auth = super().authenticate_credentials(userid, password, request)
        if ttl > 0:
            cache.set(key, f"{user.pk}:{_password_fingerprint(user)}", ttl)
        return user, auth


def _credentials_key(userid: str, password: str) -> str:
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"{userid}\0{password}".encode(), hashlib.sha256
    ).hexdigest()
    return f"marketplace:basic:{digest}"


def _password_fingerprint(user) -> str:
    return hashlib.sha256(user.password.encode()).hexdigest()[:16]


def _cached_user(value):
    if not isinstance(value, str) or ":" not in value:
        return None
    pk, fingerprint = value.split(":", 1)
    user = get_user_model().objects.filter(pk=pk, is_active=True).first()
    if user is None or _password_fingerprint(user) != fingerprint:
        return None
    return user


def project_for_account(user, request) -> str:
    """The project a Basic-authenticated request works in (see the authentication class)."""
    from apps.accounts.models import Membership

    header = (request.META.get(PROJECT_HEADER) or "").strip()
    if header:
        return header
    configured = setting("MARKETPLACE_PROJECT")
    if configured:
        return str(configured)
    mine = Membership.objects.filter(user=user).order_by()  # any two: no ordering, no join
    projects = list(mine.values_list("project_id", flat=True)[:2])
    if len(projects) == 1:
        return projects[0]
    if not projects:
        raise drf.PermissionDenied("This account is not a member of any project.")
    raise drf.PermissionDenied(
        "This account belongs to several projects: send the X-Orchard-Project header, or use "
        "an account (a compute service account) of one project."
    )


# --- errors ----------------------------------------------------------------------------------


def status_and_message(exc: Exception) -> tuple[int, str]:
    """The (status, message) of an exception on the orchestrator surface."""
    if isinstance(exc, OrchardError):
        if isinstance(exc, ValidationFailed | Conflict):
            return 400, exc.message
        if isinstance(exc, Unauthorized):
            return 401, exc.message
        if isinstance(exc, Forbidden):
            return 403, exc.message
        if isinstance(exc, NotFound):
            return 404, exc.message
        if isinstance(exc, PayloadTooLarge):
            return 413, exc.message
        return 500, "Internal error."
    if isinstance(exc, drf.ValidationError | drf.ParseError | DjangoValidationError):
        detail = getattr(exc, "detail", None) or getattr(exc, "messages", None) or str(exc)
        return 400, error_message(detail)
    if isinstance(exc, InvalidToken | TokenError):
        return 401, "Token is invalid or expired."
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return 401, error_message(exc.detail)
    if isinstance(exc, drf.PermissionDenied | DjangoPermissionDenied):
        return 403, error_message(getattr(exc, "detail", None) or "Permission denied.")
    if isinstance(exc, drf.NotFound | Http404):
        return 404, "Page does not exist."
    if isinstance(exc, drf.APIException) and exc.status_code < 500:
        return exc.status_code, error_message(exc.detail)
    return 500, "Internal error."


def error_answer(status: int, message: str) -> tuple[int, str, bytes]:
    """An error answered outside the views under `/orchestrator` (a body over its limit, a Host
    not served, an error in middleware: `apps.core.errors`; registered by
    MarketplaceConfig.ready)."""
    return json_answer(status, {"Error": message})


def orchestrator_exception_handler(exc, context):
    status, message = status_and_message(exc)
    if status == 500:
        logger.error("orchestrator error", exc_info=exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = getattr(exc, "auth_header", None) or (
            'Basic realm="orchestrator"'
        )
    if isinstance(exc, drf.Throttled) and exc.wait:
        headers["Retry-After"] = str(int(exc.wait))
    return Response({"Error": message}, status=status, headers=headers)
