"""REST: a paginated list (50 rows of a 10,000-row table) through DRF with the envelope and the
tenancy base, versus a bare Django view doing the same query and JSON; and the number of queries
per list request at page sizes 10 and 100 (must be equal)."""

import statistics
import time

from bench import django_env
from bench.harness import Context, Row, row


def _bare_view(request, project_id):
    from django.http import JsonResponse

    from apps.accounts.models import Membership

    rows = (
        Membership.objects.filter(project_id=project_id)
        .select_related("user")
        .order_by("user__username")
    )
    total = rows.count()
    items = [
        {
            "username": m.user.username,
            "name": m.user.name,
            "role": m.role,
            "is_project_admin": m.is_project_admin,
            "created_at": m.created_at.isoformat(),
        }
        for m in rows[:50]
    ]
    return JsonResponse({"items": items, "total": total})


urlpatterns: list = []


@row("rest")
def rest(ctx: Context) -> list[Row]:
    vendor = django_env.setup()
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from django.urls import include, path

    from apps.accounts.models import Membership, Project, User
    from apps.accounts.services import project_create, token_pair_for

    global urlpatterns
    urlpatterns = [
        path("bare/<project_id>/members", _bare_view),
        path("", include("config.urls")),
    ]
    n = 1_000 if ctx.quick else 10_000
    owner = User.objects.create_user("bench-owner", password="x" * 12)
    project = project_create(actor=owner, name="bench")
    users = User.objects.bulk_create(
        [User(username=f"u{i:05d}", name=f"User {i}") for i in range(n - 1)], batch_size=2000
    )
    Membership.objects.bulk_create(
        [Membership(user=u, project=project) for u in users], batch_size=2000
    )
    token = token_pair_for(user=owner, project=project)["access"]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    api = f"/api/projects/{project.pk}/members?page_size=50&page=3"
    bare = f"/bare/{project.pk}/members"
    requests = 20 if ctx.quick else 200

    with override_settings(ROOT_URLCONF="bench.rest", ALLOWED_HOSTS=["*"]):
        assert client.get(api).status_code == 200 and client.get(bare).status_code == 200

        def timed(url):
            samples = []
            for _ in range(requests):
                start = time.perf_counter()
                client.get(url)
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        drf, plain = [], []
        for _ in range(ctx.repeats):
            drf.append(timed(api))
            plain.append(timed(bare))
        queries = {}
        for size in (10, 100):
            with CaptureQueriesContext(connection) as captured:
                client.get(f"/api/projects/{project.pk}/members?page_size={size}")
            queries[size] = len(captured.captured_queries)
    Project.objects.filter(pk=project.pk).delete()
    User.objects.filter(username__startswith="u").delete()
    return [
        Row(
            "rest.list",
            f"50 of {n} rows, {vendor}",
            statistics.median(drf) * 1e3,
            statistics.median(plain) * 1e3,
            "ms",
            notes="DRF + envelope + tenancy vs bare Django view, same query",
        ),
        Row(
            "rest.queries",
            "queries per list at page_size 10 / 100",
            queries[10],
            queries[100],
            "",
            goal="ratio = 1",
        ),
    ]
