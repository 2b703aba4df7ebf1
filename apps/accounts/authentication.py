"""JWT authentication.

The main API takes `Authorization: Bearer <token>` (simplejwt); websockets pass the token in the
query string (`?token=`), an `Authorization: Bearer` header, or the `Sec-WebSocket-Protocol`
list (`apps.accounts.ws`). Protocol surfaces add their own ways on top in their own modules (the
Hanami gateway's raw `X-Auth-Token`: `apps.hanami.authentication`). All of them end in
simplejwt's validation, or in `user_for_token`.
"""

from rest_framework_simplejwt.authentication import JWTAuthentication as _SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import AccessToken

from apps.core.exceptions import Unauthorized


class JWTAuthentication(_SimpleJWTAuthentication):
    """simplejwt's Bearer authentication, in Orchard's realm."""

    www_authenticate_realm = "orchard"


def user_for_token(raw: str | bytes | None):
    """(user, access token) for a raw access token, or Unauthorized."""
    if not raw:
        raise Unauthorized("Missing token.")
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    auth = JWTAuthentication()
    try:
        token = AccessToken(raw.strip())
        user = auth.get_user(token)
    except (InvalidToken, TokenError) as exc:
        raise Unauthorized("Token is invalid or expired.") from exc
    except Exception as exc:  # AuthenticationFailed: unknown or inactive user
        raise Unauthorized("Token is invalid or expired.") from exc
    return user, token
