"""Where the orchestrator follows upstream rather than the stricter first version: known data
linked to another problem, new data's first rank runnable at once, `failed -> done`, one-uuid
predictions, and the claim -> done time in the main API."""

import pytest

from tests.conftest import client_for
from tests.marketplace.conftest import PREDUPLET_FIELDS, ZERO_UUID, Orchestrator, new_uuid

pytestmark = pytest.mark.django_db


def _claim(orch, uplet_uuid, kind="learnuplet"):
    r = orch.post(f"worker/{kind}/{uplet_uuid}", {"worker": ZERO_UUID})
    assert r.status_code == 200, r.content


def _done(orch, uplet_uuid, perf):
    r = orch.post(f"learndone/{uplet_uuid}", {"status": "done", "perf": perf})
    assert r.status_code == 200, r.content


def test_known_data_are_linked_to_a_second_problem(owner_orch, market):
    other = owner_orch.problem(test=[new_uuid()], size=2)
    second_algo = owner_orch.algo(other)["new_algo"]["uuid"]
    known = market["train"][:3]
    r = owner_orch.post("data", {"uuid": known, "problems": [other]})
    assert r.status_code == 201, r.content
    assert r.json()["new_learnuplets"] == 2  # 3 training data of `other`, batches of 2
    assert [d["uuid"] for d in r.json()["new_datas"]] == known
    doc = owner_orch.get(f"data/{known[0]}").json()
    assert sorted(doc["problems"]) == sorted([market["problem"], other])
    assert [u["train_data"] for u in owner_orch.learnuplets(algo=second_algo)] == [
        known[:2],
        known[2:],
    ]
    # The first problem's learnuplets are untouched; a pair already linked is refused whole.
    assert len(owner_orch.learnuplets(algo=market["algo"])) == 3
    r = owner_orch.post("data", {"uuid": [new_uuid(), known[0]], "problems": [other]})
    assert r.status_code == 400 and "already registered" in r.json()["Error"]
    assert len(owner_orch.get("data").json()["datas"]) == 6


def test_new_datas_first_rank_is_runnable_at_once_from_the_best_model(
    owner_orch, compute_orch, market
):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    _claim(compute_orch, uplets[0]["uuid"])
    _done(compute_orch, uplets[0]["uuid"], 0.6)
    # Ranks 1 (runnable) and 2 (waiting) are unfinished; new data arrive.
    more = [new_uuid(), new_uuid(), new_uuid()]
    r = owner_orch.post("data", {"uuid": more, "problems": [market["problem"]]})
    assert r.json()["new_learnuplets"] == 2
    ranks = owner_orch.learnuplets(algo=market["algo"])
    assert [u["model_start"] for u in ranks[2:]] == [None, uplets[0]["model_end"], None]
    # Rank 3 can be claimed now, before ranks 1 and 2: any todo rank with a model_start.
    _claim(compute_orch, ranks[3]["uuid"])
    r = compute_orch.post(f"worker/learnuplet/{ranks[4]['uuid']}", {"worker": ZERO_UUID})
    assert r.status_code == 400 and "earlier rank" in r.json()["Error"]
    _done(compute_orch, ranks[3]["uuid"], 0.9)
    # Rank 4 (rank 3 + 1) starts from the best model so far: rank 3's.
    rank4 = owner_orch.get(f"learnuplet/{ranks[4]['uuid']}").json()
    assert rank4["model_start"] == ranks[3]["model_end"]
    # Rank 1 finishing worse leaves rank 2 on the best model, rank 3's.
    _claim(compute_orch, ranks[1]["uuid"])
    _done(compute_orch, ranks[1]["uuid"], 0.1)
    assert (
        owner_orch.get(f"learnuplet/{ranks[2]['uuid']}").json()["model_start"]
        == (ranks[3]["model_end"])
    )


def test_a_failed_learnuplet_may_still_be_reported_done(world, owner_orch, compute_orch, market):
    uplets = owner_orch.learnuplets(algo=market["algo"])
    first, second = uplets[0]["uuid"], uplets[1]["uuid"]
    _claim(compute_orch, first)
    r = compute_orch.post(f"learndone/{first}", {"status": "failed"})
    assert r.status_code == 200
    # The chain went on from the algo itself.
    assert owner_orch.get(f"learnuplet/{second}").json()["model_start"] == market["algo"]
    # Another compute account may not turn it done; the one that claimed it may.
    from tests.factories import add_member, make_user

    stranger = make_user("compute-b", is_service_account=True)
    add_member(world.project, stranger, "member")
    r = Orchestrator(stranger.username).post(f"learndone/{first}", {"status": "done", "perf": 1})
    assert r.status_code == 400 and "another worker" in r.json()["Error"]
    _done(compute_orch, first, 0.7)
    doc = owner_orch.get(f"learnuplet/{first}").json()
    assert (doc["status"], doc["perf"]) == ("done", 0.7)
    # Rank 1, still todo, now starts from the model rank 0 produced.
    assert owner_orch.get(f"learnuplet/{second}").json()["model_start"] == doc["model_end"]
    # done is final.
    for body in ({"status": "failed"}, {"status": "done", "perf": 0.9}):
        r = compute_orch.post(f"learndone/{first}", body)
        assert r.status_code == 400 and "not pending" in r.json()["Error"], body


def test_a_prediction_of_one_uuid_answers_its_document(world, owner_orch, compute_orch, market):
    first = owner_orch.learnuplets(algo=market["algo"])[0]
    _claim(compute_orch, first["uuid"])
    _done(compute_orch, first["uuid"], 0.8)
    data = new_uuid()
    r = owner_orch.post("prediction", {"data": data, "problem": market["problem"]})
    assert r.status_code == 201, r.content
    doc = r.json()
    assert set(doc) == PREDUPLET_FIELDS and doc["data"] == data
    assert (doc["model"], doc["status"], doc["worker"]) == (first["model_end"], "todo", None)
    assert owner_orch.get(f"preduplet/{doc['uuid']}").json() == doc
    # A list is still one preduplet over the list; the filter matches either form.
    both = [data, new_uuid()]
    r = owner_orch.post("prediction", {"data": both, "problem": market["problem"]})
    assert r.status_code == 201 and r.json() == {"new_preduplets": 1}
    found = owner_orch.get("preduplet", data=data).json()["preduplets"]
    assert [p["data"] for p in found] == [data, both]
    assert owner_orch.get("preduplet", data=data[:8]).status_code == 400
    for bad in ({"data": "nope"}, {"data": 12}, {"data": []}, {"data": [data, data]}):
        r = owner_orch.post("prediction", {**bad, "problem": market["problem"]})
        assert r.status_code == 400, bad
    # The main API lists the data uuids either way.
    items = client_for(world.owner).get(f"/api/marketplace/{world.project.pk}/preduplets")
    assert sorted(len(p["data"]) for p in items.json()["data"]["items"]) == [1, 2]


def test_the_claim_to_done_time_is_in_the_main_api(world, compute_orch, market):
    first = compute_orch.learnuplets(algo=market["algo"])[0]["uuid"]
    url = f"/api/marketplace/{world.project.pk}/learnuplets/{first}"
    client = client_for(world.viewer)
    assert client.get(url).json()["data"]["claim_to_done_s"] is None
    _claim(compute_orch, first)
    claimed = client.get(url).json()["data"]
    assert claimed["claimed_at"] and claimed["claim_to_done_s"] is None
    _done(compute_orch, first, 0.5)
    done = client.get(url).json()["data"]
    assert done["claim_to_done_s"] is not None and done["claim_to_done_s"] >= 0
