"""The Label Studio gateway's Basic auth: a backend's credentials, stored as a keyed hash and
checked on every Label Studio request (`backend_authenticate`)."""

from __future__ import annotations

import base64
import binascii
import hmac

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.utils.crypto import get_random_string, salted_hmac

from apps.core.exceptions import (
    Unauthorized,
)
from apps.core.throttling import credential_attempt
from apps.mlbackend.models import (
    LabelStudioBackend,
)

# A backend's Basic password is stored as `hmac-sha256$<salt>$<hex>`: HMAC-SHA256 keyed with
# SECRET_KEY and a random per-credential salt. It is a random-looking secret checked on every
# Label Studio request, so it needs a keyed hash (microseconds), not a login password hasher
# (hundreds of milliseconds of CPU per request and per guess). Values stored before are Django
# password hashes: still accepted, and replaced by the keyed hash on their first success.
BACKEND_HASH_ALGORITHM = "hmac-sha256"


_BACKEND_HASH_SALT = "orchard.labelstudio.basic-auth"


def _backend_digest(salt: str, password: str, secret: str) -> str:
    return salted_hmac(
        f"{_BACKEND_HASH_SALT}:{salt}", password, secret=secret, algorithm="sha256"
    ).hexdigest()


def hash_backend_password(password: str) -> str:
    """The stored form of a backend's Basic password (see above)."""
    salt = get_random_string(22)
    return f"{BACKEND_HASH_ALGORITHM}${salt}${_backend_digest(salt, password, settings.SECRET_KEY)}"


def _backend_password_matches(password: str, stored: str) -> tuple[bool, bool]:
    """(whether `password` matches `stored`, whether `stored` should be rewritten)."""
    algorithm, _, rest = stored.partition("$")
    if algorithm != BACKEND_HASH_ALGORITHM:
        return check_password(password, stored), True  # a legacy Django password hash
    salt, _, digest = rest.partition("$")
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(_backend_digest(salt, password, secret).encode(), digest.encode()):
            return True, index > 0  # a rotated SECRET_KEY: rewrite under the current one
    return False, False


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("This ML backend needs HTTP Basic credentials.")
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("Malformed Basic credentials.") from None
    if not sep:
        raise Unauthorized("Malformed Basic credentials.")
    return user, password


def backend_authenticate(
    *,
    backend: LabelStudioBackend,
    authorization: str | None,
    client: str,
    secret: str | None = None,
    webhook: bool = False,
) -> None:
    """Check the request's credentials when the backend has some; Unauthorized if wrong.

    `secret` is the one of the secret URL (`/ml/<id>/s/<secret>/...`, None on the plain URL): a
    wrong one is refused on every route; the right one is enough for a `webhook` (Label Studio
    sends webhooks without Basic credentials), every other route still needs the backend's
    Basic credentials. Every check is throttled per `client` (a `client_ident`) and per backend
    before it runs (AUTH_FAILURE_RATE, see `apps.core.throttling`): past it, 429.
    """
    if secret is not None:
        with credential_attempt(client, account=f"labelstudio:{backend.pk}") as attempt:
            if not hmac.compare_digest(secret.encode(), backend.webhook_secret.encode()):
                raise Unauthorized("Invalid secret URL for this ML backend.")
            attempt.succeeded()
        if webhook:
            return
    if not backend.has_credentials:
        return
    user, password = _basic_credentials(authorization or "")
    stored = backend.basic_auth_password
    with credential_attempt(client, account=f"labelstudio:{backend.pk}") as attempt:
        user_ok = hmac.compare_digest(user.encode(), backend.basic_auth_user.encode())
        password_ok, rehash = _backend_password_matches(password, stored)
        if not (user_ok and password_ok):
            raise Unauthorized("Invalid credentials for this ML backend.")
        attempt.succeeded()
    if rehash:
        backend.basic_auth_password = hash_backend_password(password)
        type(backend).objects.filter(pk=backend.pk, basic_auth_password=stored).update(
            basic_auth_password=backend.basic_auth_password
        )
