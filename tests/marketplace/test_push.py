"""Compute push: runnable uplets are POSTed to a project's compute API exactly as upstream's
orchestrator posts them (`app/tasks.py` `post_uplet`), by the job engine, at least once.

The compute API is a real process (tests/marketplace/compute_api.py) replaying morpheo-compute's
routes and validation and recording every request it gets."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from apps.marketplace.models import ComputePush, PushState
from apps.tasks.models import Task
from apps.tasks.runner import task_sweep
from tests.conftest import client_for
from tests.marketplace.conftest import ZERO_UUID, new_uuid
from tests.tasks.conftest import wait_for, wait_state

RECEIVER = Path(__file__).with_name("compute_api.py")


class ComputeAPI:
    """The compute API process: its base URL and what it received."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.record = tmp_path / f"received-{uuid.uuid4().hex[:6]}.jsonl"
        self.record.touch()
        self.process = subprocess.Popen(
            [sys.executable, str(RECEIVER), str(self.record), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        port = self.process.stdout.readline().strip()  # printed once it listens
        assert port.isdigit(), "the compute API stand-in did not start"
        self.url = f"http://127.0.0.1:{port}"

    def received(self) -> list[dict]:
        lines = self.record.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def posts(self, count: int, timeout: float = 30) -> list[dict]:
        """Wait until `count` POSTs arrived; return them."""
        return wait_for(
            lambda: (p := [r for r in self.received() if r["method"] == "POST"])[count - 1 :] and p,
            timeout=timeout,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def compute_api(tmp_path):
    started = []

    def start(*args: str) -> ComputeAPI:
        api = ComputeAPI(tmp_path, *args)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture
def push_settings(settings):
    settings.MARKETPLACE_COMPUTE_ALLOW_PRIVATE = True  # the stand-in listens on loopback
    settings.MARKETPLACE_COMPUTE_PUSH_BACKOFF_S = 0.05
    settings.MARKETPLACE_COMPUTE_PUSH_BACKOFF_MAX_S = 0.2
    settings.MARKETPLACE_COMPUTE_PUSH_TIMEOUT_S = 5
    return settings


def _set_compute(world, url):
    r = client_for(world.owner).put(
        f"/api/marketplace/{world.project.pk}/compute", {"url": url}, format="json"
    )
    assert r.status_code == 200, r.content
    return r


def _pushes(state=None):
    qs = ComputePush.objects.order_by("id")
    return list(qs.filter(state=state) if state else qs)


@pytest.mark.django_db(transaction=True)
def test_runnable_uplets_are_posted_to_the_compute_api_as_upstream_does(
    world, stub_worker, owner_orch, compute_orch, compute_api, push_settings
):
    api = compute_api()
    _set_compute(world, api.url + "/")  # a trailing slash is dropped, as the routes are joined
    test = [new_uuid()]
    train = [new_uuid() for _ in range(3)]
    problem = owner_orch.problem(test=test, size=2)
    owner_orch.data([*train, *test], [problem])
    algo = owner_orch.algo(problem)["new_algo"]["uuid"]

    # Rank 0 became runnable at the algo's creation: POST {url}/learn with its document.
    [first] = api.posts(1)
    ranks = owner_orch.learnuplets(algo=algo)
    assert first["method"] == "POST" and first["path"] == "/learn"
    assert first["headers"]["content-type"] == "application/json"
    assert "authorization" not in first["headers"]  # upstream's push carries no credentials
    assert json.loads(first["body"]) == ranks[0]  # the document, status todo
    assert list(json.loads(first["body"])) == list(ranks[0])  # upstream's field order
    push = wait_for(lambda: _pushes(PushState.DELIVERED))[0]
    assert (push.attempts, push.last_status, push.kind) == (1, 202, "learn")
    # The push row is written by the task's body; the engine finishes the task after it returns.
    assert push.task.kind == "compute_push"
    wait_state(push.task_id, states=("finished",))
    # Only the first rank is runnable: rank 1 waits for rank 0.
    assert len(api.posts(1)) == 1 and ranks[1]["model_start"] is None

    # A compute worker takes rank 0 and reports it: rank 1 is runnable and pushed.
    r = compute_orch.post(f"worker/learnuplet/{ranks[0]['uuid']}", {"worker": ZERO_UUID})
    assert r.status_code == 200, r.content
    r = compute_orch.post(f"learndone/{ranks[0]['uuid']}", {"status": "done", "perf": 0.8})
    assert r.status_code == 200, r.content
    second = api.posts(2)[1]
    body = json.loads(second["body"])
    assert second["path"] == "/learn" and body["uuid"] == ranks[1]["uuid"]
    assert body["model_start"] == ranks[0]["model_end"] and body["rank"] == 1

    # A prediction of one data uuid (the Go client's form): POST {url}/pred with its document.
    data = new_uuid()
    r = owner_orch.post("prediction", {"data": data, "problem": problem})
    assert r.status_code == 201 and r.json()["data"] == data
    pred = api.posts(3)[2]
    assert pred["path"] == "/pred" and json.loads(pred["body"]) == r.json()
    wait_for(lambda: len(_pushes(PushState.DELIVERED)) == 3)
    # The built-in compute ran nothing: the compute API replaced it.
    assert not Task.objects.filter(kind__in=["learnuplet", "preduplet"]).exists()


@pytest.mark.django_db(transaction=True)
def test_a_failing_compute_api_is_retried_with_backoff_and_a_refusal_is_final(
    world, stub_worker, owner_orch, compute_orch, compute_api, push_settings
):
    api = compute_api("--fail-first", "2")  # 503 twice, then 202
    _set_compute(world, api.url)
    problem = owner_orch.problem(test=[new_uuid()], size=5)
    owner_orch.data([new_uuid(), new_uuid()], [problem])
    owner_orch.algo(problem)
    posts = api.posts(3)
    assert len({p["body"] for p in posts}) == 1  # the same bytes every time
    push = wait_for(lambda: _pushes(PushState.DELIVERED))[0]
    assert (push.attempts, push.last_status, push.last_error) == (3, 202, "")

    # A preduplet over a list of data: the compute API (Go `Preduplet.Data` is one uuid)
    # refuses it with 400; that is final, and the push fails after one attempt.
    [uplet] = owner_orch.learnuplets()
    r = compute_orch.post(f"worker/learnuplet/{uplet['uuid']}", {"worker": ZERO_UUID})
    assert r.status_code == 200, r.content
    r = compute_orch.post(f"learndone/{uplet['uuid']}", {"status": "done", "perf": 0.5})
    assert r.status_code == 200, r.content
    r = owner_orch.post("prediction", {"data": [new_uuid()], "problem": problem})
    assert r.status_code == 201 and r.json() == {"new_preduplets": 1}
    failed = wait_for(lambda: _pushes(PushState.FAILED))[0]
    assert (failed.kind, failed.attempts, failed.last_status) == ("pred", 1, 400)
    task = wait_for(lambda: Task.objects.filter(pk=failed.task_id, state="failed").first())
    assert "HTTP 400" in task.error
    assert len(api.posts(4)) == 4  # received once, not retried


@pytest.mark.django_db(transaction=True)
def test_a_push_survives_a_lost_broker_message_and_a_dead_compute_api(
    world, stub_broker, owner_orch, compute_api, push_settings, tmp_path
):
    """The outbox row and its task are committed with the uplet. Here the broker forgets the
    message (the embedded broker lives in memory: a restart) and the compute API is down past
    every attempt; the restarted worker's sweep sends it again, and the admin's retry delivers
    it once the compute API is back."""
    import dramatiq

    push_settings.MARKETPLACE_COMPUTE_PUSH_ATTEMPTS = 2
    down = compute_api()
    down.stop()  # nothing listens on its port any more
    _set_compute(world, down.url)
    problem = owner_orch.problem(test=[new_uuid()], size=5)
    owner_orch.data([new_uuid()], [problem])
    owner_orch.algo(problem)
    [push] = _pushes()
    assert push.state == PushState.PENDING and push.task.state == "queued"
    stub_broker.flush_all()  # the restart: every message in flight is gone

    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        assert str(push.task_id) in task_sweep(resend_after_s=0)["resent"]
        push = wait_for(lambda: _pushes(PushState.FAILED))[0]
        assert push.attempts == 2 and push.last_status is None and push.last_error

        # A compute API is up (the admin points the project at it) and retries the push.
        api = ComputeAPI(tmp_path)
        try:
            _set_compute(world, api.url)
            r = client_for(world.owner).post(
                f"/api/marketplace/{world.project.pk}/pushes/{push.pk}/retry"
            )
            assert r.status_code == 200 and r.json()["data"]["state"] == "pending", r.content
            [received] = api.posts(1)
            assert received["path"] == "/learn"
            push = wait_for(lambda: _pushes(PushState.DELIVERED))[0]
            assert push.attempts == 1 and push.last_status == 202
        finally:
            api.stop()
    finally:
        worker.stop()


@pytest.mark.django_db
def test_the_compute_url_is_for_project_admins_and_never_a_private_address(world, settings):
    url = f"/api/marketplace/{world.project.pk}/compute"
    owner, member, viewer = (client_for(u) for u in (world.owner, world.member, world.viewer))
    r = viewer.get(url)
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"  # none yet
    r = member.put(url, {"url": "https://compute.example.org"}, format="json")
    assert r.status_code == 403
    for bad in (
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "http://169.254.169.254",
        "http://10.0.0.5",
        "ftp://compute.example.org",
        "http://user:pw@compute.example.org",
        "http://compute.example.org/?x=1",
        "compute.example.org",
        "",
    ):
        r = owner.put(url, {"url": bad}, format="json")
        assert r.status_code == 422, (bad, r.content)
    r = owner.put(url, {"url": "https://compute.example.org/api/"}, format="json")
    assert r.status_code == 200 and r.json()["data"]["url"] == "https://compute.example.org/api"
    assert viewer.get(url).json()["data"]["enabled"] is True
    assert member.delete(url).status_code == 403
    assert owner.delete(url).status_code == 200 and owner.get(url).status_code == 404
    settings.MARKETPLACE_COMPUTE_ALLOW_PRIVATE = True  # the operator allows private networks
    assert owner.put(url, {"url": "http://127.0.0.1:8000"}, format="json").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_host_name_resolving_to_loopback_is_refused_at_delivery(
    world, stub_worker, owner_orch, compute_api, push_settings
):
    api = compute_api()
    port = api.url.rsplit(":", 1)[1]
    _set_compute(world, f"http://localhost:{port}")  # accepted: names are checked when resolved
    push_settings.MARKETPLACE_COMPUTE_ALLOW_PRIVATE = False
    problem = owner_orch.problem(test=[new_uuid()], size=5)
    owner_orch.data([new_uuid()], [problem])
    owner_orch.algo(problem)
    push = wait_for(lambda: _pushes(PushState.FAILED))[0]
    assert push.attempts == 1 and "private" in push.last_error
    assert api.received() == []  # nothing reached it
