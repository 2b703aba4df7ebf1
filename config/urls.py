"""Every HTTP surface of Orchard. Each app owns its routes in `apps/<app>/api/urls.py` (main API,
under /api/) and, for protocol gateways, `apps/<app>/urls.py` mounted at the protocol's prefix."""

from importlib import import_module

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.accounts.admin import admin_login
from apps.core.api.negotiation import SchemaFormatNegotiation
from apps.core.api.views import UnknownRouteView

API_APPS = [
    "accounts",
    "system",
    "datasets",
    "clusters",
    "training",
    "exports",
    "marketplace",
    "mlbackend",
    "hanami",
]

api_patterns = [path("", include(f"apps.{app}.api.urls")) for app in API_APPS]


def _gateway_patterns() -> list:
    """Protocol surfaces outside /api/ (Hanami, Label Studio, labelprop, orchestrator)."""
    patterns = []
    for app in API_APPS:
        try:
            module = import_module(f"apps.{app}.urls")
        except ModuleNotFoundError as exc:
            if exc.name != f"apps.{app}.urls":
                raise
            continue
        patterns += module.urlpatterns
    return patterns


urlpatterns = [
    # The admin login with its credential checks throttled (before the site's own login route).
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(content_negotiation_class=SchemaFormatNegotiation),
        name="schema",
    ),
    # HTML pages: no OPTIONS (DRF's metadata answer cannot be rendered as their template).
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", http_method_names=["get", "head"]),
        name="swagger-ui",
    ),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/", include(api_patterns)),
    # After every API route: an unknown one answers the API's 404 envelope, not an HTML page.
    re_path(r"^api(?:/.*)?$", UnknownRouteView.as_view(), name="api-unknown"),
    *_gateway_patterns(),
]

# Errors Django answers itself (a Host not in ALLOWED_HOSTS, an error in middleware, with DEBUG off
# its 403/404) in the format of the surface that owns the path; HTML pages elsewhere.
handler400 = "apps.core.errors.bad_request"
handler403 = "apps.core.errors.permission_denied"
handler404 = "apps.core.errors.page_not_found"
handler500 = "apps.core.errors.server_error"
