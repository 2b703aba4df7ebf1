"""List pagination through a real list route (the project's tasks): offset pages with or without
a COUNT, keyset cursors whose cost does not grow with the depth, and a bounded query count."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tasks.models import Task
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _tasks(world, n: int, *, offset: int = 0) -> None:
    base = timezone.now() - timedelta(days=1)
    rows = [
        Task(project=world.project, owner=world.owner, kind="noop", name=f"t{offset + i}")
        for i in range(n)
    ]
    Task.objects.bulk_create(rows)
    # Several rows share a created_at, so the primary key must break the ties.
    for i, row in enumerate(rows):
        Task.objects.filter(pk=row.pk).update(
            created_at=base + timedelta(seconds=(offset + i) // 3)
        )


def _url(world):
    return f"/api/projects/{world.project.pk}/tasks"


def test_a_cursor_walk_returns_every_row_once_in_the_pages_order(world):
    _tasks(world, 25)
    client = client_for(world.owner)
    paged = client.get(_url(world), {"page_size": 200}).json()["data"]
    assert paged["total"] == 25 and paged["next_cursor"] is None
    expected = [t["id"] for t in paged["items"]]

    seen, cursor = [], None
    first = client.get(_url(world), {"page_size": 10}).json()["data"]
    seen += [t["id"] for t in first["items"]]
    cursor = first["next_cursor"]
    _tasks(world, 5, offset=100)  # newer rows arrive meanwhile: they shift no later page
    while cursor:
        page = client.get(_url(world), {"page_size": 10, "cursor": cursor}).json()["data"]
        assert page["total"] is None and page["page"] is None
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
    assert seen == expected


def test_count_false_skips_the_count_and_still_says_whether_more_follow(
    world, django_assert_num_queries
):
    _tasks(world, 12)
    client = client_for(world.owner)
    page = client.get(_url(world), {"page_size": 5, "count": "false"}).json()["data"]
    assert page["total"] is None and page["pages"] is None and len(page["items"]) == 5
    assert page["next_cursor"]
    last = client.get(_url(world), {"page_size": 5, "page": 3, "count": "false"}).json()["data"]
    assert len(last["items"]) == 2 and last["next_cursor"] is None


@pytest.mark.parametrize("bad", ["", "x", "!!!", "W10", "WyJ4Il0", "a" * 5000, "WzEsMl0"])
def test_a_cursor_not_given_out_is_refused_in_the_envelope(world, bad):
    r = client_for(world.owner).get(_url(world), {"cursor": bad})
    assert r.status_code in (400, 422), r.content
    assert r.json()["error"]["details"]["cursor"]


def test_queries_per_list_do_not_grow_with_the_page_size(world, django_assert_max_num_queries):
    _tasks(world, 210)
    client = client_for(world.owner)
    client.get(_url(world), {"page_size": 10})  # warm caches (auth, project)
    counts = {}
    for size in (10, 200):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        for mode in ({}, {"count": "false"}):
            with CaptureQueriesContext(connection) as ctx:
                r = client.get(_url(world), {"page_size": size, **mode})
            assert r.status_code == 200 and len(r.json()["data"]["items"]) == size
            counts[(size, bool(mode))] = len(ctx.captured_queries)
    assert counts[(10, False)] == counts[(200, False)]
    assert counts[(10, True)] == counts[(200, True)] == counts[(10, False)] - 1  # no COUNT


def test_a_cursor_whose_row_is_gone_or_hidden_is_refused(world):
    _tasks(world, 12)
    client = client_for(world.owner)
    first = client.get(_url(world), {"page_size": 5}).json()["data"]
    Task.objects.filter(pk=first["items"][-1]["id"]).delete()
    r = client.get(_url(world), {"page_size": 5, "cursor": first["next_cursor"]})
    assert (
        r.status_code in (400, 422) and "start again" in r.json()["error"]["details"]["cursor"][0]
    )
    # A cursor naming a row of another project does not open that project's list.
    other = Task.objects.create(
        project=world.other_project, owner=world.outsider, kind="noop", name="theirs"
    )
    import base64

    foreign = base64.urlsafe_b64encode(str(other.pk).encode()).decode().rstrip("=")
    assert client.get(_url(world), {"cursor": foreign}).status_code in (400, 422)
