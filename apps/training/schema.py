"""OpenAPI description of the access token in the query string of the SSE route (EventSource
cannot send an Authorization header)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class QueryTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.training.api.views.QueryTokenAuthentication"
    name = "queryToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "query", "name": "token"}
