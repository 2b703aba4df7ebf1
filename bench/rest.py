"""REST over real HTTP: a paginated list (page 3 of the members of a 10,000-member project) as a
team-mode deployment answers it (daphne, prod settings, PostgreSQL; `bench.deployment.team` with
`bench.site_settings`), requested with a Bearer JWT by a client with keep-alive, versus a bare
Django view in the same server process doing the same work (`bench.site_urls.bare_members`: the
same token check, membership check, COUNT, page query and JSON) for the same page; at page sizes
10 and 200. The items of both answers are compared before timing, so both read the same page.

- rest.list_10, rest.list_200: median latency per request, Orchard / bare view.
- rest.queries: SQL queries per list request at page size 200 / at page size 10, as the server
  counted them (`X-Bench-Queries`); the bare view's counts in the notes. Goal: equal.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import Context, Row, db_name, row, skipped

PASSWORD = "bench-owner-password"
SEED = """
from apps.accounts.models import Membership, User
users = User.objects.bulk_create(
    [User(username=f"u{{i:05d}}", name=f"User {{i}}") for i in range({count})], batch_size=2000
)
Membership.objects.bulk_create(
    [Membership(user=u, project_id="{project}") for u in users], batch_size=2000
)
"""


def _seed(dep, members: int) -> str:
    """A project of `members` members (one of them its owner) and the owner's token; the bulk
    rows are written by a `manage.py shell` of the deployment (10,000 API calls would take
    minutes), the owner, the project and the token come over HTTP."""
    dep.manage(
        "shell",
        "-c",
        "from apps.accounts.models import User; "
        f"User.objects.create_user('bench-owner', password='{PASSWORD}')",
    )
    dep.login("bench-owner", PASSWORD)
    project = dep.ok(dep.post("/api/projects", {"name": "bench"}))["id"]
    dep.manage("shell", "-c", SEED.format(count=members - 1, project=project))
    return project


def _measure(dep, project: str, size: int, requests_n: int, repeats: int) -> dict:
    import requests

    api = dep.url(f"/api/projects/{project}/members?page_size={size}&page=3")
    bare = dep.url(f"/bench/bare/projects/{project}/members?page_size={size}&page=3")
    with requests.Session() as session:
        session.headers.update(dep.headers())
        answers = {url: session.get(url, timeout=60) for url in (api, bare)}
        for answer in answers.values():
            assert answer.status_code == 200, answer.text[:2000]
        ours, theirs = (answers[url].json()["data"] for url in (api, bare))
        assert ours["items"] == theirs["items"] and len(ours["items"]) == size
        assert ours["total"] == theirs["total"]

        def timed(url: str) -> float:
            samples = []
            for _ in range(requests_n):
                start = time.perf_counter()
                session.get(url, timeout=60).raise_for_status()
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        drf, plain = [], []
        for _ in range(repeats):  # interleaved so drift hits both sides alike
            drf.append(timed(api))
            plain.append(timed(bare))
        queries = {
            side: int(session.get(url, timeout=60).headers["X-Bench-Queries"])
            for side, url in (("api", api), ("bare", bare))
        }
    return {"api_s": statistics.median(drf), "bare_s": statistics.median(plain), **queries}


@row("rest")
def rest(ctx: Context) -> list[Row]:
    from bench.deployed import PG_URL, REDIS_DB, REDIS_URL
    from bench.deployment import shared_team_setup, team, unreachable

    reason = unreachable(PG_URL, REDIS_URL)
    if reason:
        return [skipped("rest.list", "page of members over HTTP", reason, unit="ms")]
    members = 1_000 if ctx.quick else 10_000
    requests_n = 20 if ctx.quick else 200
    results = {}
    with tempfile.TemporaryDirectory(prefix="orchard-bench-rest-") as tmp:
        with team(
            workdir=Path(tmp),
            pg_server=PG_URL,
            redis_server=REDIS_URL,
            first_redis_db=REDIS_DB,
            db_name=db_name(f"rest_{os.getpid()}"),
            workers=0,
            reuse=shared_team_setup(),
            extra_env={
                "DJANGO_SETTINGS_MODULE": "bench.site_settings",
                "LOGIN_THROTTLE_RATE": "1000/min",
            },
        ) as dep:
            project = _seed(dep, members)
            for size in (10, 200):
                results[size] = _measure(dep, project, size, requests_n, ctx.repeats)
    where = "team mode (daphne, prod settings, PostgreSQL), HTTP keep-alive, Bearer JWT"
    rows = [
        Row(
            f"rest.list_{size}",
            f"page 3 of {size}, {members} members, ms",
            results[size]["api_s"] * 1e3,
            results[size]["bare_s"] * 1e3,
            "ms",
            goal="<= 1.5" if size == 10 else "<= 1.3",
            notes=f"DRF + envelope + tenancy vs a bare Django view in the same server, same "
            f"auth, queries and JSON (no keyset cursor); {where}; {requests_n} requests x "
            f"{ctx.repeats}",
        )
        for size in (10, 200)
    ]
    rows.append(
        Row(
            "rest.queries",
            "queries per list, page size 200 / 10",
            results[200]["api"],
            results[10]["api"],
            "",
            goal="ratio = 1",
            notes=f"counted in the server; bare view: {results[200]['bare']} / "
            f"{results[10]['bare']}",
        )
    )
    return rows
