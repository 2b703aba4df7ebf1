"""Conformance of `/orchestrator/` with the Morpheo protocol page: the collection routes, the
learnuplet rules, and the compute worker's requests exactly as the Go client sends them."""

import pytest

from apps.marketplace.models import Learnuplet, UpletStatus
from tests.marketplace.conftest import (
    LEARNUPLET_FIELDS,
    PREDUPLET_FIELDS,
    ZERO_UUID,
    Orchestrator,
    new_uuid,
)

pytestmark = pytest.mark.django_db


def _done(orch, uplet_uuid, perf, train_perf=None, test_perf=None):
    r = orch.post(f"worker/learnuplet/{uplet_uuid}", {"worker": ZERO_UUID})
    assert r.status_code == 200, r.content
    r = orch.post(
        f"learndone/{uplet_uuid}",
        {"status": "done", "perf": perf, "train_perf": train_perf, "test_perf": test_perf},
    )
    assert r.status_code == 200, r.content
    return r


def test_problem_data_algo_answer_the_protocol_documents(owner_orch):
    problem, workflow, test = new_uuid(), new_uuid(), [new_uuid(), new_uuid()]
    r = owner_orch.post(
        "problem",
        {"uuid": problem, "workflow": workflow, "test_dataset": test, "size_train_dataset": 2},
    )
    assert r.status_code == 201, r.content
    doc = r.json()["new_problem"]
    assert set(r.json()) == {"new_problem"}
    assert {k: doc[k] for k in ("uuid", "workflow", "test_dataset", "size_train_dataset")} == {
        "uuid": problem,
        "workflow": workflow,
        "test_dataset": test,
        "size_train_dataset": 2,
    }
    assert isinstance(doc["timestamp_upload"], int)

    # Data before any algo: no learnuplet. One uuid (not a list) is accepted, as upstream.
    train = [new_uuid() for _ in range(5)]
    r = owner_orch.post("data", {"uuid": [*train, *test], "problems": [problem]})
    assert r.status_code == 201, r.content
    assert r.json()["new_learnuplets"] == 0
    assert [d["uuid"] for d in r.json()["new_datas"]] == [*train, *test]
    assert all(d["problems"] == [problem] for d in r.json()["new_datas"])
    single = new_uuid()
    r = owner_orch.post("data", {"uuid": single, "problems": problem})
    assert r.status_code == 201 and r.json()["new_datas"][0]["uuid"] == single

    algo = new_uuid()
    r = owner_orch.post("algo", {"uuid": algo, "name": "my-algo", "problem": problem})
    assert r.status_code == 201, r.content
    assert r.json()["new_algo"]["uuid"] == algo
    assert r.json()["new_algo"]["problem"] == problem
    # 6 training data (the 5 and the single one) in batches of 2.
    assert r.json()["new_learnuplets"] == 3

    # Collections and documents.
    assert [p["uuid"] for p in owner_orch.get("problem").json()["problems"]] == [problem]
    assert [a["uuid"] for a in owner_orch.get("algo").json()["algos"]] == [algo]
    assert len(owner_orch.get("data").json()["datas"]) == 8
    assert owner_orch.get(f"problem/{problem}").json()["uuid"] == problem
    assert owner_orch.get(f"algo/{algo}").json()["name"] == "my-algo"
    assert owner_orch.get(f"data/{single}").json()["problems"] == [problem]


def test_learnuplets_are_batches_with_ranks_and_only_rank_0_has_a_model_start(owner_orch, market):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    assert [u["rank"] for u in uplets] == [0, 1, 2]
    assert all(set(u) == LEARNUPLET_FIELDS for u in uplets)
    train = market["train"]
    assert [u["train_data"] for u in uplets] == [train[0:2], train[2:4], train[4:5]]
    assert all(u["test_data"] == market["test"] for u in uplets)
    assert all(u["status"] == "todo" and u["problem"] == market["problem"] for u in uplets)
    assert [u["model_start"] for u in uplets] == [market["algo"], None, None]
    assert len({u["model_end"] for u in uplets}) == 3
    assert all(u["worker"] is None and u["perf"] is None for u in uplets)
    assert all(
        u["timestamp_done"] is None and isinstance(u["timestamp_creation"], int) for u in uplets
    )
    doc = owner_orch.get(f"learnuplet/{uplets[1]['uuid']}").json()
    assert doc == uplets[1]


def test_the_go_worker_takes_a_learnuplet_and_reports_maps_of_perfs(
    owner_orch, compute_orch, market
):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    first = uplets[0]["uuid"]

    # client.UpdateUpletStatus("learnuplet", "pending", id) with the zero uuid as worker.
    r = compute_orch.post(f"worker/learnuplet/{first}", {"worker": ZERO_UUID})
    assert r.status_code == 200, r.content
    assert r.json() == {"learnuplet_worker_set": first}
    doc = compute_orch.get(f"learnuplet/{first}").json()
    assert (doc["status"], doc["worker"]) == ("pending", ZERO_UUID)

    # A second claim of the same uplet loses.
    r = compute_orch.post(f"worker/learnuplet/{first}", {"worker": new_uuid()})
    assert r.status_code == 400 and set(r.json()) == {"Error"}
    # Rank 1 has no model_start yet: it cannot be taken before rank 0 is finished.
    r = compute_orch.post(f"worker/learnuplet/{uplets[1]['uuid']}", {"worker": ZERO_UUID})
    assert r.status_code == 400 and "earlier rank" in r.json()["Error"]

    # client.PostLearnResult(id, Perfuplet{Status, Perf, TrainPerf map, TestPerf map}).
    train_perf = {d: 0.8 for d in uplets[0]["train_data"]}
    test_perf = {market["test"][0]: 0.75}
    r = compute_orch.post(
        f"learndone/{first}",
        {"status": "done", "perf": 0.75, "train_perf": train_perf, "test_perf": test_perf},
    )
    assert r.status_code == 200, r.content
    assert r.json() == {"updated_learnuplet": first}
    doc = compute_orch.get(f"learnuplet/{first}").json()
    assert doc["status"] == "done" and doc["perf"] == 0.75
    assert doc["train_perf"] == train_perf and doc["test_perf"] == test_perf
    assert isinstance(doc["timestamp_done"], int)
    # The next rank starts from the model rank 0 produced.
    assert (
        compute_orch.get(f"learnuplet/{uplets[1]['uuid']}").json()["model_start"]
        == doc["model_end"]
    )
    # Reporting twice is refused (done is final).
    r = compute_orch.post(f"learndone/{first}", {"status": "failed"})
    assert r.status_code == 400 and "not pending" in r.json()["Error"]


def test_the_go_clients_status_update_bodies_are_accepted(owner_orch, compute_orch, market):
    """`UpdateUpletStatus` posts `{"status": "pending"}` to /worker/... and `{"status":
    "failed"}` to /<uplet type>/<uuid>."""
    first = owner_orch.learnuplets(algo=market["algo"])[0]["uuid"]
    r = compute_orch.post(f"worker/learnuplet/{first}", {"status": "pending"})
    assert r.status_code == 200 and r.json() == {"learnuplet_worker_set": first}
    assert compute_orch.get(f"learnuplet/{first}").json()["worker"] == ZERO_UUID
    r = compute_orch.post(f"learnuplet/{first}", {"status": "failed"})
    assert r.status_code == 200 and r.json() == {"updated_learnuplet": first}
    assert compute_orch.get(f"learnuplet/{first}").json()["status"] == "failed"


def test_documented_list_perfs_and_the_best_model_is_carried_forward(
    owner_orch, compute_orch, market
):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    _done(compute_orch, uplets[0]["uuid"], 0.9, [0.8, 0.85], [0.9])
    assert compute_orch.get(f"learnuplet/{uplets[0]['uuid']}").json()["train_perf"] == [0.8, 0.85]
    # Rank 1 does worse: rank 2 starts from rank 0's model, the best so far.
    _done(compute_orch, uplets[1]["uuid"], 0.5)
    rank2 = compute_orch.get(f"learnuplet/{uplets[2]['uuid']}").json()
    assert rank2["model_start"] == uplets[0]["model_end"]


def test_a_failed_rank_does_not_stall_the_chain(owner_orch, compute_orch, market):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    r = compute_orch.post(f"worker/learnuplet/{uplets[0]['uuid']}", {"worker": ZERO_UUID})
    assert r.status_code == 200
    r = compute_orch.post(f"learndone/{uplets[0]['uuid']}", {"status": "failed"})
    assert r.status_code == 200 and r.json() == {"updated_learnuplet": uplets[0]["uuid"]}
    # Nothing done yet: rank 1 starts from the algo itself, like rank 0.
    assert (
        compute_orch.get(f"learnuplet/{uplets[1]['uuid']}").json()["model_start"] == market["algo"]
    )
    failed = compute_orch.get(f"learnuplet/{uplets[0]['uuid']}").json()
    assert failed["status"] == "failed" and failed["perf"] is None


def test_new_data_append_learnuplets_to_every_algo(owner_orch, compute_orch, market):
    second = owner_orch.algo(market["problem"])["new_algo"]["uuid"]
    uplets = owner_orch.learnuplets(algo=market["algo"])
    for u, perf in zip(uplets, (0.6, 0.9, 0.7), strict=True):
        _done(compute_orch, u["uuid"], perf)

    more = [new_uuid() for _ in range(3)]
    r = owner_orch.post("data", {"uuid": more, "problems": [market["problem"]]})
    assert r.status_code == 201 and r.json()["new_learnuplets"] == 4  # 2 batches x 2 algos
    first_algo = owner_orch.learnuplets(algo=market["algo"])
    assert [u["rank"] for u in first_algo] == [0, 1, 2, 3, 4]
    assert [u["train_data"] for u in first_algo[3:]] == [more[0:2], more[2:3]]
    # The finished chain continues from its best model (rank 1); rank 4 waits for rank 3.
    assert first_algo[3]["model_start"] == uplets[1]["model_end"]
    assert first_algo[4]["model_start"] is None
    # The second algo's chain had not started: its new ranks come after its own.
    assert [u["rank"] for u in owner_orch.learnuplets(algo=second)] == [0, 1, 2, 3, 4]

    # Test data are never trained on, even when they arrive after the algo.
    test = new_uuid()
    problem = owner_orch.problem(test=[test])
    assert owner_orch.algo(problem)["new_learnuplets"] == 0
    r = owner_orch.post("data", {"uuid": [test], "problems": [problem]})
    assert r.status_code == 201 and r.json()["new_learnuplets"] == 0
    r = owner_orch.post("data", {"uuid": [new_uuid()], "problems": [problem]})
    assert r.status_code == 201 and r.json()["new_learnuplets"] == 1


def test_a_prediction_uses_the_problems_best_model(owner_orch, compute_orch, market):
    data = [new_uuid(), new_uuid()]
    r = owner_orch.post("prediction", {"data": data, "problem": market["problem"]})
    assert r.status_code == 400 and set(r.json()) == {"Error"}  # no trained model yet
    r = owner_orch.post("prediction", {"data": data, "problem": new_uuid()})
    assert r.status_code == 400

    uplets = owner_orch.learnuplets(algo=market["algo"])
    _done(compute_orch, uplets[0]["uuid"], 0.7)
    _done(compute_orch, uplets[1]["uuid"], 0.95)
    r = owner_orch.post("prediction", {"data": data, "problem": market["problem"]})
    assert r.status_code == 201 and r.json() == {"new_preduplets": 1}

    [pred] = owner_orch.get("preduplet").json()["preduplets"]
    assert set(pred) == PREDUPLET_FIELDS
    assert pred["model"] == uplets[1]["model_end"] and pred["data"] == data
    assert pred["status"] == "todo" and pred["problem"] == market["problem"]
    r = compute_orch.post(f"worker/preduplet/{pred['uuid']}", {"worker": ZERO_UUID})
    assert r.status_code == 200 and r.json() == {"preduplet_worker_set": pred["uuid"]}
    storage = new_uuid()
    r = compute_orch.post(
        f"preddone/{pred['uuid']}", {"status": "done", "prediction_storage_uuid": storage}
    )
    assert r.status_code == 200 and r.json() == {"updated_preduplet": pred["uuid"]}
    doc = compute_orch.get(f"preduplet/{pred['uuid']}").json()
    assert (doc["status"], doc["prediction_storage_uuid"]) == ("done", storage)
    assert isinstance(doc["timestamp_done"], int)


def test_collections_filter_by_field_equality(owner_orch, compute_orch, market):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    _done(compute_orch, uplets[0]["uuid"], 0.5)
    get = owner_orch.get
    assert [u["rank"] for u in get("learnuplet", status="todo").json()["learnuplets"]] == [1, 2]
    assert [u["rank"] for u in get("learnuplet", rank=2).json()["learnuplets"]] == [2]
    assert len(get("learnuplet", uuid=uplets[1]["uuid"]).json()["learnuplets"]) == 1
    assert get("learnuplet", algo=new_uuid()).json() == {"learnuplets": []}
    # A list field matches documents that contain the value (upstream MongoDB semantics).
    found = get("learnuplet", train_data=market["train"][3]).json()["learnuplets"]
    assert [u["rank"] for u in found] == [1]
    assert len(get("data", problems=market["problem"]).json()["datas"]) == 6
    assert [a["uuid"] for a in get("algo", problem=market["problem"]).json()["algos"]] == [
        market["algo"]
    ]
    for bad in ({"bogus": "1"}, {"rank": "x"}, {"status": "sleeping"}, {"algo": "not-a-uuid"}):
        r = get("learnuplet", **bad)
        assert r.status_code == 400 and set(r.json()) == {"Error"}, bad


def test_unknown_documents_routes_and_methods(owner_orch):
    for path in (f"problem/{new_uuid()}", "learnuplet/not-a-uuid", f"preduplet/{new_uuid()}"):
        r = owner_orch.get(path)
        assert r.status_code == 404 and set(r.json()) == {"Error"}, path
    r = owner_orch.get("dummy_field")
    assert r.status_code == 404 and r.json() == {"Error": "Page does not exist."}
    r = owner_orch.post("worker/uplet/" + new_uuid(), {"worker": ZERO_UUID})
    assert r.status_code == 404 and set(r.json()) == {"Error"}
    for method in ("DELETE", "PUT", "OPTIONS"):
        r = owner_orch.send(method, "problem")
        assert r.status_code == 405 and set(r.json()) == {"Error"}, method
    # The compute routes answer an unknown uplet with 400 and upstream's message.
    unknown = new_uuid()
    r = owner_orch.post(f"learndone/{unknown}", {"status": "failed"})
    assert r.status_code == 400 and r.json()["Error"].startswith(
        f"no update of learnuplet {unknown}"
    )


@pytest.mark.parametrize(
    "path,body",
    [
        (
            "problem",
            {"uuid": "P1", "workflow": "W1", "test_dataset": ["x"], "size_train_dataset": 4},
        ),
        ("problem", {"dummy": "ho"}),
        (
            "problem",
            {"uuid": "U", "workflow": "U", "test_dataset": ["U"], "size_train_dataset": 2, "x": 1},
        ),
        ("problem", {"uuid": "U", "workflow": "U", "test_dataset": "U", "size_train_dataset": 2}),
        ("problem", {"uuid": "U", "workflow": "U", "test_dataset": [], "size_train_dataset": 2}),
        (
            "problem",
            {"uuid": "U", "workflow": "U", "test_dataset": ["U"], "size_train_dataset": "4"},
        ),
        (
            "problem",
            {"uuid": "U", "workflow": "U", "test_dataset": ["U"], "size_train_dataset": True},
        ),
        ("problem", {"uuid": "U", "workflow": "U", "test_dataset": ["U"], "size_train_dataset": 0}),
        ("problem", {"uuid": 12, "workflow": "U", "test_dataset": ["U"], "size_train_dataset": 1}),
        ("problem", ["not", "an", "object"]),
        ("algo", {"uuid": "U", "problem": "U"}),
        ("algo", {"uuid": "U", "name": "", "problem": "U"}),
        ("algo", {"uuid": "U", "name": "a", "problem": "NEW"}),
        ("data", {"uuid": ["U", "U"], "problems": []}),
        ("data", {"uuid": [], "problems": []}),
        ("data", {"uuid": ["U"], "problems": ["NEW"]}),
        ("data", {"uuid": [42], "problems": []}),
        ("prediction", {"problem": "U"}),
        ("prediction", {"data": "U", "problem": "U"}),
    ],
)
def test_bad_input_is_refused_in_the_protocols_format(owner_orch, world, path, body):
    """Malformed uuids, unknown fields, wrong types, missing keys: 400 {"Error": ...}, and
    nothing is written ("U" stands for a fresh valid uuid, "NEW" for an unknown problem)."""
    from apps.marketplace.models import Algo, Data, Preduplet, Problem

    existing = owner_orch.problem(test=[new_uuid()])

    def fill(value):
        if value == "U":
            return existing if path in ("algo", "prediction") else new_uuid()
        if value == "NEW":
            return new_uuid()
        if isinstance(value, list):
            shared = new_uuid() if value == ["U", "U"] else None
            return [shared or fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    counts = [m.objects.count() for m in (Problem, Algo, Data, Preduplet)]
    r = owner_orch.post(path, fill(body))
    assert r.status_code == 400, (r.status_code, r.content)
    assert set(r.json()) == {"Error"} and r.json()["Error"]
    assert [m.objects.count() for m in (Problem, Algo, Data, Preduplet)] == counts


def test_malformed_json_and_non_finite_numbers(owner_orch, compute_orch, market):
    r = owner_orch.post("problem", raw="{not json")
    assert r.status_code == 400 and "Malformed JSON" in r.json()["Error"]
    first = owner_orch.learnuplets(algo=market["algo"])[0]["uuid"]
    assert compute_orch.post(f"worker/learnuplet/{first}", {"worker": ZERO_UUID}).status_code == 200
    for body in (
        '{"status": "done", "perf": NaN}',
        '{"status": "done", "perf": "high"}',
        '{"status": "done"}',
        '{"status": "finished", "perf": 0.5}',
        '{"status": "done", "perf": 0.5, "train_perf": {"a": "x"}}',
        '{"status": "done", "perf": 0.5, "train_perf": "x"}',
        '{"status": "done", "perf": 0.5, "bogus": 1}',
    ):
        r = compute_orch.post(f"learndone/{first}", raw=body)
        assert r.status_code == 400 and set(r.json()) == {"Error"}, body
    # Nothing half-written: still pending, no perf.
    uplet = Learnuplet.objects.get(uuid=first)
    assert uplet.status == UpletStatus.PENDING and uplet.perf is None
    for body in ({"worker": "nope"}, {}, {"worker": ZERO_UUID, "status": "done"}):
        r = compute_orch.post(f"worker/learnuplet/{first}", body)
        assert r.status_code == 400, body
    r = compute_orch.post(f"preddone/{new_uuid()}", {"status": "done"})
    assert r.status_code == 400


def test_the_body_is_json_whatever_the_content_type(owner_orch):
    problem = new_uuid()
    r = owner_orch.post(
        "problem",
        {
            "uuid": problem,
            "workflow": new_uuid(),
            "test_dataset": [new_uuid()],
            "size_train_dataset": 1,
        },
        content_type="text/plain",
    )
    assert r.status_code == 201 and r.json()["new_problem"]["uuid"] == problem
    assert r["Content-Type"] == "application/json"


def test_another_project_may_reuse_a_uuid(world, owner_orch):
    problem = owner_orch.problem(test=[new_uuid()])
    other = Orchestrator(world.outsider.username)
    r = other.post(
        "problem",
        {
            "uuid": problem,
            "workflow": new_uuid(),
            "test_dataset": [new_uuid()],
            "size_train_dataset": 1,
        },
    )
    assert r.status_code == 201
    # ... while in one project it is unique.
    r = owner_orch.post(
        "problem",
        {
            "uuid": problem,
            "workflow": new_uuid(),
            "test_dataset": [new_uuid()],
            "size_train_dataset": 1,
        },
    )
    assert r.status_code == 400 and "already exists" in r.json()["Error"]
