"""Fixtures of the marketplace tests: an HTTP client that talks like the Go compute worker, a
compute service account, and helpers that build problems/algos/data through the gateway."""

import base64
import json
import uuid

import pytest
from django.test import Client

from apps.core.tenancy import Role
from tests.factories import PASSWORD, add_member, make_user
from tests.tasks.conftest import digits, stub_broker, stub_worker  # noqa: F401 (fixtures)

BASE = "/orchestrator/"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"

# Field lists of the protocol page ("Learnuplet rules") and of upstream's documents.
LEARNUPLET_FIELDS = {
    "uuid",
    "problem",
    "workflow",
    "algo",
    "model_start",
    "model_end",
    "train_data",
    "test_data",
    "worker",
    "perf",
    "train_perf",
    "test_perf",
    "status",
    "rank",
    "timestamp_creation",
    "timestamp_done",
}
PREDUPLET_FIELDS = {
    "uuid",
    "problem",
    "workflow",
    "model",
    "data",
    "worker",
    "status",
    "prediction_storage_uuid",
    "timestamp_request",
    "timestamp_done",
}


def new_uuid() -> str:
    return str(uuid.uuid4())


class Orchestrator:
    """Requests as the Go client (morpheo-go-packages `client/orchestrator.go`) sends them: a JSON
    body with `Content-Type: application/json` and HTTP Basic credentials."""

    def __init__(self, username=None, password=PASSWORD, *, project=None, headers=None):
        self.client = Client()
        self.headers = dict(headers or {})
        if username is not None:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["HTTP_AUTHORIZATION"] = f"Basic {token}"
        if project is not None:
            self.headers["HTTP_X_ORCHARD_PROJECT"] = project

    def post(self, path, body=None, *, raw=None, content_type="application/json"):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.generic(
            "POST", BASE + path, data, content_type=content_type, **self.headers
        )

    def get(self, path, **params):
        return self.client.get(BASE + path, params, **self.headers)

    def send(self, method, path, body=None):
        return self.client.generic(
            method,
            BASE + path,
            json.dumps(body or {}),
            content_type="application/json",
            **self.headers,
        )

    # -- the protocol's writes, asserting success --------------------------------------------
    def problem(self, *, test, size=1, uuid_=None, workflow=None) -> str:
        uuid_ = uuid_ or new_uuid()
        r = self.post(
            "problem",
            {
                "uuid": uuid_,
                "workflow": workflow or new_uuid(),
                "test_dataset": list(test),
                "size_train_dataset": size,
            },
        )
        assert r.status_code == 201, r.content
        return uuid_

    def data(self, uuids, problems) -> dict:
        r = self.post("data", {"uuid": list(uuids), "problems": list(problems)})
        assert r.status_code == 201, r.content
        return r.json()

    def algo(self, problem, *, uuid_=None, name="external-net") -> dict:
        r = self.post("algo", {"uuid": uuid_ or new_uuid(), "name": name, "problem": problem})
        assert r.status_code == 201, r.content
        return r.json()

    def learnuplets(self, **filters) -> list[dict]:
        r = self.get("learnuplet", **filters)
        assert r.status_code == 200, r.content
        return sorted(r.json()["learnuplets"], key=lambda u: (u["algo"], u["rank"]))


@pytest.fixture
def compute(world):
    """A compute service account of project A (member role), as a Go worker would use."""
    user = make_user("compute-a", is_service_account=True)
    add_member(world.project, user, Role.MEMBER)
    return user


@pytest.fixture
def owner_orch(world) -> Orchestrator:
    return Orchestrator(world.owner.username)


@pytest.fixture
def compute_orch(compute) -> Orchestrator:
    return Orchestrator(compute.username)


@pytest.fixture
def market(owner_orch):
    """A problem of project A with 5 training data and 1 test datum (external files), batches
    of 2, and an external algo: 3 learnuplets."""
    test = [new_uuid()]
    train = [new_uuid() for _ in range(5)]
    problem = owner_orch.problem(test=test, size=2)
    owner_orch.data([*train, *test], [problem])
    algo = owner_orch.algo(problem)["new_algo"]["uuid"]
    return {"problem": problem, "train": train, "test": test, "algo": algo}
