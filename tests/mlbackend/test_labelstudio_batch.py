"""/predict batches as Label Studio 1.23 sends them: one bad task never empties the batch, any
number of tasks, task data fetched concurrently by a bounded pool under one shared deadline."""

import time

import pytest

from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.batch import DEADLINE_MISSED
from apps.mlbackend.labelstudio.connect import clear_check_cache
from tests.conftest import client_for
from tests.mlbackend.labelstudio_helpers import (
    IMAGE_CONFIG,
    LS_TOKEN,
    TEXT_CONFIG,
    LabelStudioClient,
    TaskDataServer,
    json_bytes,
    ls_task,
    make_backend,
    predict_body,
    setup_body,
    stripes_png,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_caches():
    runtime.clear_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()
    clear_check_cache()


def _uploads(n: int) -> dict[str, bytes]:
    return {f"/data/upload/7/{i}.png": stripes_png(i % 2 == 0) for i in range(n)}


def test_one_missing_upload_leaves_the_nine_others_their_predictions(world):
    files = _uploads(9)
    project = json_bytes({"id": 7, "title": "Stripes"})
    with TaskDataServer({**files, "/api/projects/7/": project}, require_token=LS_TOKEN) as server:
        backend = make_backend(world.project, world.owner, allow_private_networks=True)
        ls = LabelStudioClient(backend.pk)
        assert ls.post("setup", setup_body(IMAGE_CONFIG, server.url)).status_code == 200
        paths = list(files)
        paths.insert(4, "/data/upload/7/deleted.png")  # uploaded, then removed from disk
        tasks = [ls_task(100 + i, {"image": path}) for i, path in enumerate(paths)]
        r = ls.post("predict", predict_body(tasks, IMAGE_CONFIG))
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    assert len(results) == 10
    for i, item in enumerate(results):
        if i == 4:
            # Label Studio needs a `result` in every item (else it drops the whole batch):
            # an empty one, without model_version so that it is predicted again later.
            assert item == {
                "result": [],
                "score": 0.0,
                "error": "Could not fetch the task data.",
            }
        else:
            (region,) = item["result"]
            assert region["value"]["choices"][0] in ("Horizontal", "Vertical")
            assert item["model_version"] == "1.0.0"
    # The failure and its reason are visible in the main API.
    data = client_for(world.owner).get(f"/api/mlbackend/{world.project.pk}/backends/{backend.pk}")
    report = data.json()["data"]["last_predict"]
    assert (report["tasks"], report["predicted"], report["failed"]) == (10, 9, 1)
    assert report["errors"] == [{"task_id": 104, "error": "Could not fetch the task data."}]


def test_more_than_a_thousand_tasks_in_one_request(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    texts = ["a great film", "an awful film", 42, None]
    tasks = [ls_task(i + 1, {"text": texts[i % 4]}) for i in range(1001)]
    r = LabelStudioClient(backend.pk).post("predict", predict_body(tasks, TEXT_CONFIG))
    assert r.status_code == 200, r.content[:300]
    results = r.json()["results"]
    assert len(results) == 1001
    failed = [i for i, item in enumerate(results) if not item["result"]]
    assert failed == list(range(3, 1001, 4))  # the tasks without text, and only those
    assert results[3]["error"] == "task 4 has no 'text' in its data."


def test_fetches_run_in_a_bounded_pool_and_the_batch_answers_by_its_deadline(world, settings):
    """Files past the first four are held by Label Studio until after the answer: the batch
    answers at its deadline with the four that came, the rest marked missed, never waiting for
    the held ones (held 60 s, the deadline is 5 s: no timing of the machine is involved)."""
    settings.LABELSTUDIO_FETCH_CONCURRENCY = 4
    settings.LABELSTUDIO_PREDICT_DEADLINE_S = 5
    files = _uploads(40)
    first = set(list(files)[:4])
    with TaskDataServer(files, hold=lambda path: path not in first) as server:
        backend = make_backend(world.project, world.owner, allow_private_networks=True)
        backend.label_studio_url = server.url
        backend.save()
        ls = LabelStudioClient(backend.pk)
        tasks = [ls_task(i + 1, {"image": path}) for i, path in enumerate(files)]
        started = time.monotonic()
        r = ls.post("predict", predict_body(tasks, IMAGE_CONFIG))
        elapsed = time.monotonic() - started
        answered_before_release = not server.release.is_set()
        server.release.set()
        assert server.max_in_flight == 4  # the pool's bound, reached by the held fetches
    assert r.status_code == 200 and answered_before_release and elapsed < 60, elapsed
    results = r.json()["results"]
    done = [item for item in results if item["result"]]
    missed = [item for item in results if not item["result"]]
    assert len(done) == 4 and len(missed) == 36, len(done)
    # Those in flight at the deadline time out; those never started are missed.
    assert {item["error"] for item in missed} <= {DEADLINE_MISSED, "Could not fetch the task data."}
    assert DEADLINE_MISSED in {item["error"] for item in missed}


def test_task_data_is_fetched_concurrently(world, settings):
    """With a pool of 8, eight fetches are in flight together (Label Studio answers none until
    eight have arrived); with a pool of 1, one at a time."""
    files = _uploads(16)
    for workers in (1, 8):
        settings.LABELSTUDIO_FETCH_CONCURRENCY = workers
        with TaskDataServer(files, gather=8 if workers == 8 else None) as server:
            backend = make_backend(world.project, world.owner, allow_private_networks=True)
            backend.label_studio_url = server.url
            backend.save()
            ls = LabelStudioClient(backend.pk)
            tasks = [ls_task(i + 1, {"image": path}) for i, path in enumerate(files)]
            r = ls.post("predict", predict_body(tasks, IMAGE_CONFIG))
            assert all(item["result"] for item in r.json()["results"])
            assert server.max_in_flight == workers


def test_each_lane_keeps_its_connection_for_its_next_task(world, settings):
    """A Label Studio that keeps connections open (nginx, runserver): 16 uploads over two lanes
    take at most two connections, one missing upload (a 404) included, and every other task
    is predicted."""
    settings.LABELSTUDIO_FETCH_CONCURRENCY = 2
    files = _uploads(16)
    with TaskDataServer(files, keep_alive=True) as server:
        backend = make_backend(world.project, world.owner, allow_private_networks=True)
        backend.label_studio_url = server.url
        backend.save()
        paths = [*files, "/data/upload/7/deleted.png"]
        tasks = [ls_task(i + 1, {"image": path}) for i, path in enumerate(paths)]
        r = LabelStudioClient(backend.pk).post("predict", predict_body(tasks, IMAGE_CONFIG))
        assert len(server.requests) == 17
        assert 1 <= server.connections <= 2, server.connections
    results = r.json()["results"]
    assert all(item["result"] for item in results[:16])
    assert results[16]["error"] == "Could not fetch the task data."
