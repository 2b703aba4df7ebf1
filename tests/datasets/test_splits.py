"""Studio splits: create (exact, stratified, deterministic), preview, details, delete."""

import pytest

from apps.datasets.models import DatasetItem, Split
from tests.conftest import client_for
from tests.datasets.conftest import class_zip, upload

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture
def client(world):
    client = client_for(world.owner)
    r = client.post(
        f"/api/datasets/{world.project.pk}/import/upload",
        {"file": upload("d.zip", class_zip({"cat": 5, "dog": 3, "bird": 2}))},
        format="multipart",
    )
    assert r.status_code == 200
    return client


def _url(world, suffix=""):
    return f"/api/splits/{world.project.pk}{suffix}"


def _columns():
    return {i.filename: i.splits for i in DatasetItem.objects.all()}


def test_create_split_exact_stats(world, client):
    r = client.post(_url(world), {"name": "60-20-20", "ratios": RATIOS, "seed": 42}, format="json")
    assert r.status_code == 200, r.json()
    # Per class, largest-remainder rounding: bird 1/1/0, cat 3/1/1, dog 2/1/0.
    assert r.json()["data"] == {
        "split_index": 0,
        "name": "60-20-20",
        "stats": {"train": 6, "val": 3, "test": 1},
    }
    detail = client.get(_url(world, "/0")).json()["data"]
    assert detail["per_class"] == {
        "bird": {"train": 1, "val": 1, "test": 0},
        "cat": {"train": 3, "val": 1, "test": 1},
        "dog": {"train": 2, "val": 1, "test": 0},
    }
    assert detail["stats"] == {"train": 6, "val": 3, "test": 1} and detail["seed"] == 42
    assert all(len(v) == 1 for v in _columns().values())
    info = client.get(f"/api/datasets/{world.project.pk}/images/cat/img000.png/info").json()
    assert info["data"]["split"][0] in ("train", "val", "test")
    stats = client.get(f"/api/datasets/{world.project.pk}").json()["data"]
    assert stats["split_names"] == ["60-20-20"]


def test_splits_are_deterministic_and_preview_matches(world, client):
    preview = client.get(_url(world, "/preview"), {**RATIOS, "seed": 7, "name": "p"})
    assert preview.status_code == 200
    assert Split.objects.count() == 0 and all(v == [] for v in _columns().values())
    for name in ("a", "b"):
        r = client.post(_url(world), {"name": name, "ratios": RATIOS, "seed": 7}, format="json")
        assert r.status_code == 200
    client.post(_url(world), {"name": "c", "ratios": RATIOS, "seed": 8}, format="json")
    columns = _columns()
    assert all(v[0] == v[1] for v in columns.values())
    assert any(v[0] != v[2] for v in columns.values())
    detail = client.get(_url(world, "/0")).json()["data"]
    assert preview.json()["data"]["per_class"] == detail["per_class"]
    listing = client.get(_url(world)).json()["data"]
    assert listing["split_names"] == ["a", "b", "c"]
    assert [s["split_index"] for s in listing["splits"]] == [0, 1, 2]


def test_delete_split_reindexes(world, client):
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        client.post(_url(world), {"name": name, "ratios": RATIOS, "seed": seed}, format="json")
    before = _columns()
    assert client_for(world.viewer).delete(_url(world, "/1")).status_code == 403
    assert client.delete(_url(world, "/0")).status_code == 200
    after = _columns()
    assert all(after[f] == before[f][1:] for f in before)
    assert list(Split.objects.order_by("index").values_list("index", "name")) == [
        (0, "b"),
        (1, "c"),
    ]
    assert client.get(_url(world, "/2")).status_code == 404
    assert client.get(_url(world, "/1")).json()["data"]["name"] == "c"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "ratios": {"train": 0.5, "val": 0.2, "test": 0.2}},
        {"name": "x", "ratios": {"train": 1.2, "val": -0.1, "test": -0.1}},
        {"name": "x", "ratios": {"train": 1, "val": 0, "test": 0}, "seed": -1},
        {"name": "", "ratios": RATIOS},
        {"name": "x", "ratios": RATIOS, "extra": 1},
    ],
)
def test_bad_split_requests(world, client, body):
    assert client.post(_url(world), body, format="json").status_code == 422
    assert not Split.objects.exists()


def test_preview_validation_and_duplicate_names(world, client):
    assert (
        client.get(_url(world, "/preview"), {"train": 0.5, "val": 0.1, "test": 0.1}).status_code
        == 422
    )
    assert client.get(_url(world, "/preview"), {"train": "x"}).status_code == 422
    body = {"name": "a", "ratios": RATIOS}
    assert client.post(_url(world), body, format="json").status_code == 200
    assert client.post(_url(world), body, format="json").status_code == 409


def test_new_images_get_none_for_existing_splits(world, client):
    client.post(_url(world), {"name": "a", "ratios": RATIOS}, format="json")
    client.post(
        f"/api/datasets/{world.project.pk}/import/upload",
        {"file": upload("d.zip", class_zip({"fish": 2}))},
        format="multipart",
    )
    detail = client.get(_url(world, "/0")).json()["data"]
    assert detail["stats"] == {"train": 6, "val": 3, "test": 1, "none": 2}
