"""The embedded mode keeps its SQLite database on the data disk: when that disk is full, writes
answer 507 INSUFFICIENT_STORAGE (they answered a generic 500 before), and reads keep working."""

import pytest
from django.db import connection

from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)  # no test-wide atomic block to poison


@pytest.fixture
def sqlite_full():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's own 'database or disk is full' (the embedded mode)")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM")  # no free pages left over from earlier tests to fill first
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages}")  # no page more: SQLITE_FULL
    yield
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA max_page_count = 1073741823")


def test_a_write_on_a_full_sqlite_disk_is_507(world, settings, sqlite_full):
    settings.UPLOAD_SESSIONS_MAX_OPEN = 10_000  # the disk, not this limit, must stop the loop
    client = client_for(world.owner)
    status = None
    for i in range(200):  # until the free space inside the last pages is used up too
        r = client.post(
            f"/api/projects/{world.project.pk}/uploads",
            {"filename": f"{i}-" + "x" * 200, "size": 8},
            format="json",
        )
        status = r.status_code
        if status != 201:
            break
    assert status == 507, r.content
    assert r.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
    assert client.get(f"/api/projects/{world.project.pk}/datasets").status_code == 200
