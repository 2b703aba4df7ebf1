"""Every main-API list answers a page of 10 and a page of 200 with the same number of queries
(one pagination class, apps/core/api/pagination.py, and serializers without per-row queries).
The tasks list is covered in test_pagination.py, the studio's in tests/training/test_lists.py."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Membership, User
from apps.clusters.models import Checkpoint, Cluster
from apps.clusters.services import host_ensure_cpu
from apps.datasets.models import Dataset
from apps.exports.models import Export
from apps.marketplace.models import ComputePush, Problem
from apps.mlbackend.models import LabelStudioBackend
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
ROWS = 200


def _owned(world) -> dict:
    return {"project": world.project, "owner": world.owner}


def _datasets(world):
    Dataset.objects.bulk_create(
        [Dataset(**_owned(world), name=f"d{i}", kind="csv") for i in range(ROWS)]
    )


def _clusters(world):
    host = host_ensure_cpu()
    Cluster.objects.bulk_create(
        [Cluster(**_owned(world), name=f"c{i}", host=host) for i in range(ROWS)]
    )


def _checkpoints(world):
    Checkpoint.objects.bulk_create(
        [Checkpoint(**_owned(world), name=f"k{i}", file=f"k{i}.pt") for i in range(ROWS)]
    )


def _exports(world):
    Export.objects.bulk_create(
        [
            Export(**_owned(world), name=f"x{i}", format="onnx", source_kind="cluster")
            for i in range(ROWS)
        ]
    )


def _problems(world):
    Problem.objects.bulk_create(
        [
            Problem(**_owned(world), uuid=uuid.uuid4(), workflow=uuid.uuid4(), size_train_dataset=1)
            for _ in range(ROWS)
        ]
    )


def _pushes(world):
    ComputePush.objects.bulk_create(
        [
            ComputePush(
                project=world.project,
                kind="learn",
                uplet_uuid=uuid.uuid4(),
                url="http://compute.invalid/learn",
                body={},
            )
            for _ in range(ROWS)
        ]
    )


def _backends(world):
    LabelStudioBackend.objects.bulk_create(
        [LabelStudioBackend(**_owned(world), name=f"b{i}") for i in range(ROWS)]
    )


def _members(world):
    users = User.objects.bulk_create([User(username=f"m{i}") for i in range(ROWS)])
    Membership.objects.bulk_create([Membership(user=u, project=world.project) for u in users])


ROUTES = {
    "projects/{p}/datasets": _datasets,
    "projects/{p}/clusters": _clusters,
    "projects/{p}/checkpoints": _checkpoints,
    "export/{p}": _exports,
    "marketplace/{p}/problems": _problems,
    "marketplace/{p}/pushes": _pushes,
    "mlbackend/{p}/backends": _backends,
    "projects/{p}/members": _members,
}


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_page_of_200_costs_the_queries_of_a_page_of_10(world, path):
    ROUTES[path](world)
    client = client_for(world.owner)
    url = "/api/" + path.format(p=world.project.pk)
    client.get(url, {"page_size": 10})  # warm per-process caches
    counts = {}
    for size in (10, 200):
        with CaptureQueriesContext(connection) as captured:
            r = client.get(url, {"page_size": size})
        assert r.status_code == 200, r.content
        assert len(r.json()["data"]["items"]) == size
        counts[size] = len(captured.captured_queries)
    assert counts[10] == counts[200], counts
