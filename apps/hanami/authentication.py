"""The Hanami SDK's authentication: the access token sent raw (no `Bearer`) in `X-Auth-Token`.

Only the gateway's views use it; the main API takes `Authorization: Bearer` alone.
"""

from apps.accounts.authentication import JWTAuthentication


class HanamiTokenAuthentication(JWTAuthentication):
    """The raw `X-Auth-Token` header, else the usual Bearer header."""

    def authenticate(self, request):
        raw = request.META.get("HTTP_X_AUTH_TOKEN")
        if raw:
            validated = self.get_validated_token(raw.strip().encode())
            return self.get_user(validated), validated
        return super().authenticate(request)
