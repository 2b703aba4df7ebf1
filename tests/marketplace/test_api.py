"""The marketplace in the main API (`/api/marketplace/{project_id}/...`): read-only, enveloped,
paginated, filtered, with a constant number of queries per page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import client_for
from tests.marketplace.conftest import ZERO_UUID, new_uuid

pytestmark = pytest.mark.django_db


def _url(world, *parts):
    return "/".join([f"/api/marketplace/{world.project.pk}", *parts])


def test_lists_and_documents_of_every_collection(world, market, compute_orch):
    first = compute_orch.learnuplets(algo=market["algo"])[0]["uuid"]
    compute_orch.post(f"worker/learnuplet/{first}", {"worker": ZERO_UUID})
    compute_orch.post(f"learndone/{first}", {"status": "done", "perf": 0.5})
    assert (
        compute_orch.post(
            "prediction", {"data": [new_uuid()], "problem": market["problem"]}
        ).status_code
        == 201
    )

    client = client_for(world.viewer)  # reading needs no more than a viewer
    for collection, total in (
        ("problems", 1),
        ("algos", 1),
        ("data", 6),
        ("learnuplets", 3),
        ("preduplets", 1),
    ):
        r = client.get(_url(world, collection))
        assert r.status_code == 200, (collection, r.content)
        body = r.json()
        assert body["status"] == "ok" and body["data"]["total"] == total, collection
        item = body["data"]["items"][0]
        detail = client.get(_url(world, collection, item["uuid"]))
        assert detail.status_code == 200 and detail.json()["data"]["uuid"] == item["uuid"]

    uplet = client.get(_url(world, "learnuplets", first)).json()["data"]
    assert uplet["status"] == "done" and uplet["perf"] == 0.5
    assert uplet["algo"] == market["algo"] and uplet["problem"] == market["problem"]
    assert uplet["claimed_by"] == "compute-a" and uplet["rank"] == 0
    data = client.get(_url(world, "data")).json()["data"]["items"]
    assert all(d["problems"] == [market["problem"]] and d["dataset_id"] is None for d in data)


def test_filters(world, market, compute_orch):
    client = client_for(world.owner)
    todo = client.get(_url(world, "learnuplets"), {"status": "todo"}).json()["data"]
    assert todo["total"] == 3
    r = client.get(
        _url(world, "learnuplets"), {"algo": market["algo"], "problem": market["problem"]}
    )
    assert r.json()["data"]["total"] == 3
    assert client.get(_url(world, "learnuplets"), {"algo": new_uuid()}).json()["data"]["total"] == 0
    assert (
        client.get(_url(world, "algos"), {"problem": market["problem"]}).json()["data"]["total"]
        == 1
    )
    r = client.get(_url(world, "learnuplets"), {"status": "sleeping"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = client.get(_url(world, "learnuplets"), {"algo": "nope"})
    assert r.status_code == 422


def test_unknown_and_malformed_uuids_are_not_found_and_writes_are_not_allowed(world, market):
    client = client_for(world.owner)
    for path in (("problems", new_uuid()), ("learnuplets", "not-a-uuid"), ("data", new_uuid())):
        r = client.get(_url(world, *path))
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = client.post(_url(world, "problems"), {"uuid": new_uuid()}, format="json")
    assert r.status_code == 405
    r = client.delete(
        _url(
            world,
            "learnuplets",
            client.get(_url(world, "learnuplets")).json()["data"]["items"][0]["uuid"],
        )
    )
    assert r.status_code == 405


def test_a_list_costs_the_same_queries_whatever_the_page_size(world, owner_orch):
    problem = owner_orch.problem(test=[new_uuid()], size=1)
    owner_orch.data([new_uuid() for _ in range(12)], [problem])
    for _ in range(2):
        owner_orch.algo(problem)
    client = client_for(world.owner)
    counts = []
    for collection in ("learnuplets", "data", "algos"):
        per_size = []
        for size in (2, 20):
            with CaptureQueriesContext(connection) as queries:
                r = client.get(_url(world, collection), {"page_size": size})
            assert r.status_code == 200
            per_size.append(len(queries))
        counts.append((collection, per_size))
    assert all(a == b for _, (a, b) in counts), counts
