"""Tenancy, for every route of every surface.

1. Every DRF view is built on the scoped base (or declares why it is global), and every websocket
   consumer on the scoped consumer base.
2. A member of another project can neither read, list, change nor delete anything through any
   route: each route is called with every method, filled with another project's objects, and
   must answer 404 (403 for global-admin-only routes) while the database stays unchanged.
"""

import pytest
from django.apps import apps
from django.db.models import Max

from apps.core.api.views import GlobalMixin, ProjectScopedMixin
from apps.core.consumers import ProjectScopedConsumer
from config.routing import websocket_urlpatterns
from tests.conftest import client_for
from tests.tenancy import iter_routes, url_kwarg_factories

NON_API_PREFIXES = ("admin/", "api/schema/", "api/docs/", "api/redoc/", "static/", "media/")
# Routes that are public by design and hold no tenant data.
PUBLIC_ROUTES = {"system-health", "token-obtain", "token-refresh"}


def _drf_routes():
    return [
        r
        for r in iter_routes()
        if r.view_class is not None and not r.pattern.startswith(NON_API_PREFIXES)
    ]


def test_every_api_view_uses_the_scoped_base_or_says_why_not():
    offenders = []
    for route in _drf_routes():
        cls = route.view_class
        if not issubclass(cls, ProjectScopedMixin | GlobalMixin):
            offenders.append(f"{route.pattern}: {cls.__module__}.{cls.__qualname__}")
        elif issubclass(cls, GlobalMixin) and not cls.tenancy_exempt_reason:
            offenders.append(f"{route.pattern}: {cls.__qualname__} has no exempt reason")
    assert not offenders, "views outside the tenancy base:\n" + "\n".join(offenders)


def test_every_route_outside_api_is_a_known_surface():
    unknown = [
        r.pattern
        for r in iter_routes()
        if r.view_class is None and not r.pattern.startswith(NON_API_PREFIXES)
    ]
    assert not unknown, f"plain Django views outside the tenancy bases: {unknown}"


def test_the_scoped_base_cannot_be_bypassed():
    from apps.core.api.views import ProjectScopedViewSet

    with pytest.raises(TypeError, match="tenancy"):
        type(
            "Sneaky",
            (ProjectScopedViewSet,),
            {"get_queryset": lambda self: None, "__module__": "apps.x.api.views"},
        )
    with pytest.raises(TypeError, match="tenancy"):
        type(
            "Sneaky2",
            (ProjectScopedViewSet,),
            {"get_object": lambda self: None, "__module__": "apps.x.api.views"},
        )
    with pytest.raises(TypeError, match="authorize"):
        type(
            "SneakySocket",
            (ProjectScopedConsumer,),
            {"connect": lambda self: None, "__module__": "apps.x.consumers"},
        )


def test_every_websocket_consumer_uses_the_scoped_base():
    offenders = []
    for pattern in websocket_urlpatterns:
        consumer = getattr(pattern.callback, "consumer_class", None)
        if consumer is None or not (
            issubclass(consumer, ProjectScopedConsumer)
            or getattr(consumer, "tenancy_exempt_reason", "")
        ):
            offenders.append(str(pattern.pattern))
    assert not offenders, offenders


LOG_MODELS = {"hanami.AuditEntry", "hanami.ErrorEntry"}


def _snapshot():
    state = {}
    for model in apps.get_models():
        if model._meta.app_label in {"token_blacklist", "sessions", "admin", "contenttypes"}:
            continue
        if model._meta.label in LOG_MODELS:  # written by every request, on purpose
            continue
        qs = model._default_manager.all()
        fields = {f.name for f in model._meta.get_fields()}
        stamp = qs.aggregate(m=Max("updated_at"))["m"] if "updated_at" in fields else None
        state[model._meta.label] = (qs.count(), stamp)
    return state


def _expected(route, status):
    cls = route.view_class
    # A protocol surface that authenticates per object rather than per user (a Label Studio
    # backend's own Basic credentials) denies with its protocol's statuses, e.g. (401, 404).
    denied = getattr(cls, "tenancy_denied_statuses", None)
    if denied:
        return status in denied
    if issubclass(cls, GlobalMixin):
        return status in (403, 404)
    return status == 404


@pytest.mark.django_db
def test_a_member_of_another_project_reaches_nothing(world):
    factories = url_kwarg_factories()
    routes = [r for r in _drf_routes() if r.kwargs]
    assert routes, "no parametrised routes found"
    missing = sorted(
        {k for r in routes for k in r.kwargs if k != "project_id" and k not in factories}
    )
    assert not missing, f"register these URL kwargs in tests/<app>/tenancy.py: {missing}"

    # Objects of project B (the victim); the attacker is alice, admin of project A only.
    foreign = {k: f(world.other_project, world.outsider) for k, f in factories.items()}
    foreign["project_id"] = world.other_project.pk
    attacker = client_for(world.owner)
    before = _snapshot()
    failures = []
    for route in routes:
        variants = [foreign]
        if "project_id" in route.kwargs and len(route.kwargs) > 1:
            # Own project in the URL, foreign objects after it.
            variants.append({**foreign, "project_id": world.project.pk})
        for values in variants:
            url = route.url(**values)
            for method in route.methods:
                response = getattr(attacker, method.lower())(
                    url, {"name": "pwned", "project_id": world.project.pk}, format="json"
                )
                if response.status_code == 405:
                    continue
                if not _expected(route, response.status_code):
                    failures.append(f"{method} {url} -> {response.status_code}")
                elif route.pattern.startswith("api/"):
                    assert response.json()["status"] == "error", (method, url, response.content)
    assert not failures, "cross-tenant access:\n" + "\n".join(failures)
    assert _snapshot() == before, "a cross-tenant request changed the database"


# -- one fetch, one edit check ------------------------------------------------------------------
#
# Rows a surface changes are fetched through `get_visible(access, for_edit=True, denied=...)`
# (apps/core/tenancy.py): not visible answers 404 before not editable answers 403, and the edit
# rule is applied there and nowhere else. A call of the check's names outside tenancy is refused
# unless listed here, with the reason; the list only shrinks.
EDIT_CHECKS = {"require_edit", "can_edit", "get_or_not_found"}
EDIT_CHECKS_KNOWN = {
    # A service given a cluster, not fetching it: a retried task's cluster need not be one the
    # caller sees, and that answers 403 TRAIN_DENIED (a fetch would answer 404).
    ("apps/clusters/services.py", "require_edit"),
    # Rights flags that refuse nothing: whether a direct-IO socket may train (rechecked on the
    # socket's timer), whether the console offers abort/retry, whether a backend's secret URL
    # is shown. The rows were fetched through `get_visible`.
    ("apps/clusters/directio.py", "can_edit"),
    ("apps/clusters/consumers.py", "can_edit"),
    ("apps/hanami/consumers.py", "can_edit"),
    ("apps/console/views.py", "can_edit"),
    ("apps/mlbackend/labelstudio/serializers.py", "can_edit"),
}


def edit_check_calls(source: str) -> list[tuple[int, str]]:
    """Calls of `require_edit` / `can_edit` / `get_or_not_found`, as names or attributes."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in EDIT_CHECKS:
                found.append((node.lineno, name))
    return found


def test_the_edit_check_is_only_in_tenancy():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders, used = [], set()
    for path in sorted((root / "apps").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "apps/core/tenancy.py":
            continue
        for line, name in edit_check_calls(path.read_text()):
            if (rel, name) in EDIT_CHECKS_KNOWN:
                used.add((rel, name))
            else:
                offenders.append(f"{rel}:{line}: {name}(...)")
    assert not offenders, (
        "fetch the row with get_visible(access, for_edit=True, denied=...) instead:\n"
        + "\n".join(offenders)
    )
    assert used == EDIT_CHECKS_KNOWN, f"no longer needed, remove: {EDIT_CHECKS_KNOWN - used}"


def test_the_edit_check_scan_sees_names_and_methods():
    source = "require_edit(a, o)\naccess.can_edit(o)\nx.tenancy.get_or_not_found(q)\nf(can_edit)\n"
    assert edit_check_calls(source) == [
        (1, "require_edit"),
        (2, "can_edit"),
        (3, "get_or_not_found"),
    ]


@pytest.mark.django_db
def test_get_visible_for_edit_answers_404_then_403_then_the_row():
    from apps.clusters.models import Cluster
    from apps.core.exceptions import Forbidden, NotFound
    from apps.core.tenancy import EDIT_DENIED, Role, Visibility, project_access
    from tests.clusters.helpers import make_cluster
    from tests.factories import add_member, make_project, make_user

    creator, owner, member, viewer, admin, outsider = (make_user() for _ in range(6))
    project, other = make_project(creator), make_project(outsider)
    add_member(project, owner, Role.MEMBER)
    add_member(project, member, Role.MEMBER)
    add_member(project, viewer, Role.VIEWER)
    add_member(project, admin, Role.ADMIN)
    cluster = make_cluster(project, owner)
    Cluster.objects.filter(pk=cluster.pk).update(visibility=Visibility.SHARED)
    private = make_cluster(project, owner, name="private")
    Cluster.objects.filter(pk=private.pk).update(visibility=Visibility.PRIVATE)
    foreign = make_cluster(other, outsider, name="foreign")

    def access(user, proj=project):
        return project_access(user=user, project_id=proj.pk)

    # Not visible (another project's, a private one of another owner, malformed): 404 first.
    for user, pk in ((member, foreign.pk), (member, private.pk), (member, "not-a-uuid")):
        with pytest.raises(NotFound):
            Cluster.objects.get_visible(access(user), for_edit=True, denied="x", pk=pk)
    # Visible but not the caller's to change: 403 with the surface's text, else EDIT_DENIED.
    for user in (member, viewer):
        with pytest.raises(Forbidden) as denied:
            Cluster.objects.get_visible(
                access(user), for_edit=True, denied="Not yours.", pk=cluster.pk
            )
        assert denied.value.message == "Not yours."
        with pytest.raises(Forbidden) as default:
            Cluster.objects.get_visible(access(user), for_edit=True, pk=cluster.pk)
        assert default.value.message == EDIT_DENIED
        assert Cluster.objects.get_visible(access(user), pk=cluster.pk) == cluster  # reading
    # The owner (a member) and a project admin get the row.
    for user in (owner, admin):
        assert Cluster.objects.get_visible(access(user), for_edit=True, pk=cluster.pk) == cluster
    assert Cluster.objects.get_visible(access(admin), for_edit=True, pk=private.pk) == private
