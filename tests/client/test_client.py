"""The Python client against a live embedded Orchard (tests/client/conftest.py): auth with token
refresh, typed errors, pagination, chunked uploads resumed after a cut connection, run events
over SSE resumed with Last-Event-ID after a cut stream, task events over the websocket resumed
with ?after=, failures raised with the server's reason, and direct io with binary frames."""

from __future__ import annotations

import numpy as np
import pytest

from bench.deployment import ADMIN_PASSWORD

pytestmark = pytest.mark.timeout(240)

TEMPLATE = """version: 1
settings:
    max_connection_distance: 1
bricks:
    1,1,1
        input: pixels
        number_of_neurons: 64
    2,1,1
        number_of_neurons: 32
    3,1,1
        output: digit
        number_of_neurons: 10
"""


def test_login_project_and_typed_errors(server, client):
    from orchard_client import Client, NotFound, Unauthorized, ValidationError

    assert client.project == "demo"
    me = client.me()
    assert me["username"] == "admin"
    with pytest.raises(NotFound) as err:
        client.datasets.get("00000000-0000-0000-0000-000000000000")
    assert err.value.code == "NOT_FOUND" and err.value.status == 404 and err.value.message
    with pytest.raises(ValidationError) as err:
        client.experiments.create("bad", epochs=-3)
    assert err.value.code == "VALIDATION_ERROR" and err.value.status == 422
    assert "epochs" in str(err.value.details)
    with pytest.raises(Unauthorized) as err:
        Client(server.base, username="admin", password="wrong-password")
    assert err.value.code == "UNAUTHORIZED"


def test_token_refresh_is_transparent(server, client):
    from orchard_client import Client, Unauthorized

    seen = []
    tokens = Client(
        server.base,
        token="not.a-valid.token",
        refresh_token=client.refresh_token,
        project="demo",
        on_tokens=seen.append,
    )
    # The server says 401 to the bad access token; the client refreshes and sends again.
    assert [d["name"] for d in tokens.datasets.list()]
    assert len(seen) == 1 and seen[0]["access"] != "not.a-valid.token"
    # The refresh token rotated: the old one is refused, the new one works.
    stale = Client(server.base, token="x.y.z", refresh_token=client.refresh_token, project="demo")
    with pytest.raises(Unauthorized):
        list(stale.datasets.list())
    # Without a refresh token but with a password, the client logs in again.
    relog = Client(server.base, username="admin", password=ADMIN_PASSWORD, project="demo")
    relog.token, relog.refresh_token = "x.y.z", None
    assert relog.system.devices()["devices"]
    assert relog.token != "x.y.z"


def test_pagination_iterates_every_page(client):
    names = {d["name"] for d in client.datasets.list()}
    assert {"digits-train", "digits-test"} <= names
    pages = list(client.paginate(f"/api/projects/{client.project}/datasets", page_size=1))
    assert {d["name"] for d in pages} == names and len(pages) == len(names)
    assert client.projects.get()["id"] == "demo"
    assert any(p["id"] == "demo" for p in client.projects.list())
    assert [m["username"] for m in client.members.list()]


def test_chunked_upload_resumes_after_the_connection_is_cut(server, client, proxy, digits_files):
    from orchard_client import Client

    images = digits_files["train_images"]
    size = images.stat().st_size
    seen: list[int] = []
    # The cut falls inside the third 16 KiB chunk of the first connection's upload.
    proxy.cut_after(2 * 16384 + 5000)
    via_proxy = Client(proxy.url, token=client.access_token(), project="demo")
    session = via_proxy.uploads.upload_file(
        images, chunk_size=16384, progress=lambda done, total: seen.append(done)
    )
    assert proxy.cuts == 1 and proxy.connections >= 2
    assert session["complete"] and session["received_bytes"] == size
    assert seen[-1] == size and min(seen) >= 0
    assert any(b < a for a, b in zip(seen, seen[1:], strict=False)), "progress went back"
    labels = via_proxy.uploads.upload_file(digits_files["train_labels"])
    dataset = client.datasets.from_uploads(
        name="resumed", kind="mnist", uploads={"images": session["id"], "labels": labels["id"]}
    )
    assert dataset["num_samples"] == 1438 and dataset["num_classes"] == 10
    client.datasets.delete(dataset["id"])


def test_run_wait_follows_sse_and_resumes_with_last_event_id(trained):
    run, events = trained["run"], trained["events"]
    assert run["status"] == "completed"
    assert trained["proxy"]["cuts"] == 1 and trained["proxy"]["connections"] >= 2
    epochs = [e["epoch"] for e in events if e["event"] == "epoch_end"]
    assert epochs == [1, 2, 3, 4], events  # nothing missed, nothing twice
    ids = [e["id"] for e in events if e["id"] is not None]
    assert ids == sorted(set(ids))
    assert events[-1]["event"] in ("complete", "status")
    metrics = trained["client"].runs.metrics(run["id"])
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]


def test_a_stopped_run_raises_with_the_servers_reason(trained):
    from orchard_client import JobFailed

    client = trained["client"]
    exp = client.experiments.create(
        "client-stop",
        dataset_id=trained["experiment"]["dataset_id"],
        architecture="mlp",
        epochs=200,
        batch_size=8,
        devices=["cpu"],
    )
    run = client.runs.start(exp["id"])
    client.runs.stop(run["run_id"])
    with pytest.raises(JobFailed) as err:
        client.runs.wait(run["run_id"], timeout=120)
    assert err.value.state in ("cancelled", "stopped") and err.value.message
    assert err.value.exit_code == 8


def test_task_wait_over_the_websocket_resumes_after_a_cut(server, client, proxy):
    from orchard_client import Client, JobFailed

    datasets = {d["name"]: d["id"] for d in client.datasets.list()}
    cluster = client.clusters.create("client-net", TEMPLATE, seed=1)
    task = client.tasks.create(
        "client-train", "train", cluster["id"], datasets["digits-train"], {"epochs": 3}
    )
    proxy.cut_after(600, response=True)  # the upgrade answer, the state, part of the events
    watcher = Client(proxy.url, token=client.access_token(), project="demo")
    events: list[dict] = []
    finished = watcher.tasks.wait(task["id"], on_event=events.append, timeout=180)
    assert finished["state"] == "finished"
    assert proxy.cuts == 1 and proxy.connections >= 2
    seqs = [e["seq"] for e in events if isinstance(e.get("seq"), int)]
    assert seqs == sorted(set(seqs)), events  # replayed after ?after=, none twice
    assert events[0]["type"] == "state"
    # An aborted task raises with its state.
    queued = client.tasks.create(
        "client-abort", "train", cluster["id"], datasets["digits-train"], {"epochs": 500}
    )
    client.tasks.abort(queued["id"])
    with pytest.raises(JobFailed) as err:
        client.tasks.wait(queued["id"], timeout=120)
    assert err.value.state == "aborted"
    client.__dict__["_cluster"] = cluster  # for the next test when run alone: none needed


def test_direct_io_numpy_in_numpy_out(client):
    from orchard_client import ValidationError

    cluster = client.clusters.create("client-direct", TEMPLATE, seed=2)
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    with client.directio(cluster["id"], switch_mode=True) as io:
        assert io.input_size == 64 and io.output_size == 10 and io.can_train
        scores = io.request(x)
        assert scores.shape == (5, 10) and scores.dtype == np.float32
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
        y = np.eye(10, dtype=np.float32)[[1, 2, 3, 4, 5]]
        losses = [io.train(x, y) for _ in range(5)]
        assert losses[-1] < losses[0]
        with pytest.raises(ValidationError):
            io._exchange(b"X" + x.tobytes())  # the server's error frame, typed
        assert io.request(x[:1]).shape == (1, 10)  # the socket stays open
    assert client.clusters.get(cluster["id"])["mode"] == "TASK"


def test_list_routes_iterate_a_plain_list_or_a_page_object():
    """A list route may answer a page object or a plain list (wire shapes in flux): both
    iterate; a hostile answer (neither) is a typed error, not a crash."""
    import httpx
    from orchard_client import Client, OrchardError

    pages = {
        "/api/projects": {"status": "ok", "data": [{"id": "a"}, {"id": "b"}]},
        "/api/training/p/experiments": {
            "status": "ok",
            "data": {"items": [{"id": "e1"}], "page": 1, "page_size": 1, "total": 2, "pages": 2},
        },
        "/api/export/p": {"status": "ok", "data": "nonsense"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        body = pages[request.url.path]
        if request.url.params.get("page") == "2":
            body = {"status": "ok", "data": {"items": [{"id": "e2"}], "pages": 2}}
        return httpx.Response(200, json=body)

    client = Client(
        "http://orchard.test", token="t", project="p", transport=httpx.MockTransport(handler)
    )
    assert [p["id"] for p in client.projects.list()] == ["a", "b"]
    assert [e["id"] for e in client.experiments.list()] == ["e1", "e2"]
    with pytest.raises(OrchardError) as err:
        list(client.exports.list())
    assert err.value.code == "BAD_RESPONSE"


def test_every_resource_answers_through_the_client(trained):
    """One pass over the resources not followed elsewhere: models and checkpoints, a request
    task and its result, Label Studio backends, marketplace reads, hosts, exports, system."""
    client, exp, run = trained["client"], trained["experiment"], trained["run"]
    datasets = {d["name"]: d["id"] for d in client.datasets.list()}
    cluster = client.clusters.create("client-res", TEMPLATE, seed=3)
    assert cluster["id"] in {c["id"] for c in client.clusters.list()}
    checkpoint = client.clusters.save_checkpoint(cluster["id"], "first")
    assert client.checkpoints.get(checkpoint["id"])["name"] == "first"
    assert checkpoint["id"] in {c["id"] for c in client.checkpoints.list()}
    client.checkpoints.restore(checkpoint["id"], cluster["id"])
    task = client.tasks.create("client-req", "request", cluster["id"], datasets["digits-test"])
    assert client.tasks.wait(task["id"], timeout=120)["state"] == "finished"
    result = next(r for r in client.results.list() if r["task_id"] == task["id"])
    assert client.results.get(result["id"])["num_samples"] == 360
    assert 0 <= client.results.check(result["id"], datasets["digits-test"])["accuracy"] <= 100
    client.results.delete(result["id"])
    client.checkpoints.delete(checkpoint["id"])
    assert client.hosts.list() and client.system.workspace() is not None
    backend = client.labelstudio.create("client-ls", experiment_id=exp["id"])
    assert client.labelstudio.get(backend["id"])["name"] == "client-ls"
    assert backend["id"] in {b["id"] for b in client.labelstudio.list()}
    assert list(client.labelstudio.annotations(backend["id"])) == []
    client.labelstudio.delete(backend["id"])
    for listing in (
        client.marketplace.problems(),
        client.marketplace.algos(),
        client.marketplace.data(),
        client.marketplace.learnuplets(),
        client.marketplace.preduplets(),
    ):
        assert list(listing) == []
    assert {f["name"] if isinstance(f, dict) else f for f in client.exports.formats()} >= {"onnx"}
    export = client.exports.create("safetensors", run_id=run["id"], checkpoint="last")
    assert client.exports.wait(export["id"], timeout=120)["status"] == "completed"
    assert export["id"] in {e["id"] for e in client.exports.list()}
    evaluation = client.evaluations.create(
        experiment_id=exp["id"], run_id=run["id"], dataset_id=datasets["digits-test"]
    )
    done = client.evaluations.wait(evaluation["id"], timeout=120)
    assert done["results"]["confusion_matrix"] and done["id"] in {
        e["id"] for e in client.evaluations.list()
    }
    assert len(list(client.evaluations.results(evaluation["id"], page_size=100))) == 360
    assert exp["id"] in {e["id"] for e in client.experiments.list()}
    assert run["id"] in {r["id"] for r in client.experiments.runs(exp["id"])}
    client.clusters.delete(cluster["id"])


def test_csv_and_volume_datasets_upload_in_chunks(client, tmp_path):
    csv = tmp_path / "table.csv"
    rows = ["a,b,label"] + [f"{i},{i * 2},{'odd' if i % 2 else 'even'}" for i in range(50)]
    csv.write_text("\n".join(rows) + "\n")
    seen = []
    table = client.datasets.upload_csv(
        csv, name="table", label_column="label", progress=lambda *a: seen.append(a)
    )
    assert table["kind"] == "csv" and table["num_samples"] == 50 and table["num_classes"] == 2
    assert seen[-1] == ("file", csv.stat().st_size, csv.stat().st_size)
    volume = np.zeros((1, 4, 16, 16), dtype=np.float32)
    volume[0, :, 4:12, 4:12] = 1.0
    npz = tmp_path / "vol.npz"
    np.savez(npz, image=volume, label=(volume > 0.5).astype(np.uint8))
    vol = client.datasets.upload_volume(npz, name="vol")
    assert vol["kind"] == "volume" and client.datasets.find("vol")["id"] == vol["id"]
    for dataset in (table, vol):
        client.datasets.delete(dataset["id"])


def test_hostile_answers_are_bounded_and_typed():
    """An event-stream line past 1 MiB and a JSON answer past the client's limit are refused
    with typed errors before they are held whole; a non-JSON answer is a typed error too."""
    import httpx
    from orchard_client import Client, OrchardError

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            chunks = (b"data: " + b"x" * 65536 for _ in range(40))  # 2.5 MiB, no newline
            return httpx.Response(
                200, content=chunks, headers={"content-type": "text/event-stream"}
            )
        if request.url.path == "/api/auth/me":
            return httpx.Response(200, content=b"<html>proxy error</html>")
        return httpx.Response(200, json={"status": "ok", "data": {"items": ["y" * 5000]}})

    client = Client(
        "http://orchard.test", token="t", project="p", transport=httpx.MockTransport(handler)
    )
    with pytest.raises(OrchardError) as err:
        list(client.runs.watch("run-1"))
    assert err.value.code == "BAD_RESPONSE" and "too long" in err.value.message
    client.max_json_bytes = 1000
    with pytest.raises(OrchardError) as err:
        client.projects.get("p")
    assert err.value.code == "BAD_RESPONSE" and "larger" in err.value.message
    with pytest.raises(OrchardError) as err:
        client.me()
    assert err.value.code == "BAD_RESPONSE"
