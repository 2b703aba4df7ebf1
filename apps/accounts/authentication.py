"""JWT authentication for every surface.

The main API takes `Authorization: Bearer <token>`; the Hanami SDK sends the token raw in
`X-Auth-Token`; websockets pass it in the query string (`?token=`), a header, or the
`Sec-WebSocket-Protocol` list. All of them end in `user_for_token`.
"""

from rest_framework_simplejwt.authentication import JWTAuthentication as _SimpleJWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import AccessToken

from apps.core.exceptions import Unauthorized


class JWTAuthentication(_SimpleJWTAuthentication):
    """simplejwt's Bearer authentication plus the raw `X-Auth-Token` header."""

    www_authenticate_realm = "orchard"

    def authenticate(self, request):
        raw = request.META.get("HTTP_X_AUTH_TOKEN")
        if raw:
            validated = self.get_validated_token(raw.strip().encode())
            return self.get_user(validated), validated
        return super().authenticate(request)


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
