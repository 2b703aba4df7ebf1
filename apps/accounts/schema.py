"""OpenAPI description of Orchard's JWT authentication (Bearer)."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class OrchardJWTScheme(SimpleJWTScheme):
    target_class = "apps.accounts.authentication.JWTAuthentication"
    name = "jwtAuth"
