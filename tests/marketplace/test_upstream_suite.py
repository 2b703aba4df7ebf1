"""Upstream's own test suite (MorpheoOrg/morpheo-orchestrator `app/test_api.py`, the last commit
before its Hyperledger phase), translated test by test and assertion by assertion, over HTTP
against `/orchestrator/` with HTTP Basic credentials (upstream's single `test:test` user has every
right; here it is the project's admin).

Where upstream inserts documents straight into MongoDB (`self.db.<collection>.insert_one`), the
translation writes the same rows with the ORM (`_insert_*`); where it counts documents in
MongoDB, the translation reads the collection over HTTP. Every assertion either holds as upstream
wrote it or is a deliberate difference: `differs(key)` names an entry of DIFFERENCES (its reason;
the README's "Differences from upstream" lists the same), and the translation then asserts what
Orchard answers instead. `test_every_difference_is_used_and_documented` keeps the table honest.

Translation notes (not differences): upstream's ids are names ("P1", "bobor", "id_0"); they
become `ID(name)`, a uuid5 of the name, because of the first difference below. Upstream's
`test_create_data` inserts an algo "A3_0" but a learnuplet of algo "A30_s" (a typo: its new
learnuplets go to the algo its learnuplet names); here the one algo is registered under the name
its learnuplet uses.
"""

import re
import uuid
from pathlib import Path

import numpy as np
import pytest

from apps.marketplace.models import Algo, Data, Learnuplet, Preduplet, Problem, UpletStatus
from tests.marketplace.conftest import Orchestrator

pytestmark = pytest.mark.django_db

NAMESPACE = uuid.UUID("6f1b8c52-5d5e-4a43-9a4e-0d1c3a1f6b2e")

DIFFERENCES = {
    "uuid-ids": (
        "Ids must be UUIDs. Upstream stores any string ('P1', worker 'bobor', "
        "prediction_storage_uuid 'id'); its own Go clients (morpheo-go-packages `common`: "
        "uuid.UUID fields) cannot decode such documents, so Orchard answers 400 and every "
        "document it serves decodes in them. Upstream's ids are translated to uuid5s of the names."
    ),
    "unknown-filter": (
        "A query parameter that is not a field of the collection answers 400 naming it. "
        "Upstream passes it to MongoDB and answers an empty list, which hides a typo as 'no "
        "documents'."
    ),
}


def differs(key: str) -> None:
    """Mark the next assertion as a documented deliberate difference."""
    assert key in DIFFERENCES, key


def ID(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


@pytest.fixture
def api(world) -> Orchestrator:
    return Orchestrator(world.owner.username)


# --- upstream's db inserts, with the ORM ---------------------------------------------------------


def _problem(world, name, *, workflow="PW", test=("DT1",), size=2) -> Problem:
    problem, _ = Problem.objects.get_or_create(
        project=world.project,
        uuid=ID(name),
        defaults={
            "owner": world.owner,
            "workflow": ID(workflow),
            "test_dataset": [ID(t) for t in test],
            "size_train_dataset": size,
        },
    )
    return problem


def _algo(world, name, problem) -> Algo:
    algo, _ = Algo.objects.get_or_create(
        project=world.project,
        uuid=ID(name),
        defaults={"owner": world.owner, "name": name, "problem": problem},
    )
    return algo


def _insert_learnuplets(
    world,
    n,
    *,
    n_train=5,
    n_test=5,
    problem="PB",
    workflow="PW",
    status="todo",
    perf=None,
    worker=None,
    algo_prefix="MD_",
    model_prefix="MD_",
    uuid_prefix="id_",
    rank=0,
):
    """Upstream's `generate_list_learnuplets` + `insert_many`, field for field."""
    perf = perf if isinstance(perf, list) else [perf] * n
    if rank == 0 and algo_prefix != model_prefix:
        algo_prefix = model_prefix
    problem_row = _problem(world, problem, workflow=workflow)
    done = status == "done"
    for j in range(n):
        Learnuplet.objects.create(
            project=world.project,
            owner=world.owner,
            uuid=ID(f"{uuid_prefix}{j}"),
            problem=problem_row,
            workflow=ID(workflow),
            algo=_algo(world, f"{algo_prefix}{j}_s", problem_row),
            rank=rank,
            model_start=ID(f"{model_prefix}{j}_s"),
            model_end=ID(f"{model_prefix}{j}_e"),
            train_data=[ID(f"D{i}{j}") for i in range(n_train)],
            test_data=[ID(f"DT{i}") for i in range(n_test)],
            status=status,
            perf=perf[j],
            train_perf=list(np.random.randn(n_train).tolist()) if done else None,
            test_perf=list(np.random.randn(n_test).tolist()) if done else None,
            worker=ID(worker) if worker else None,
            # A pending uplet was claimed by upstream's one user: here the project's admin.
            claimed_by=world.owner if status != "todo" else None,
        )


def _insert_preduplets(world, n, *, status="todo", worker=None, uuid_prefix="id_"):
    """Upstream's `generate_list_preduplets` + `insert_one`."""
    problem = _problem(world, "PB")
    for j in range(n):
        Preduplet.objects.create(
            project=world.project,
            owner=world.owner,
            uuid=ID(f"{uuid_prefix}{j}"),
            problem=problem,
            workflow=ID("PW"),
            model=ID("MD"),
            data=ID(f"T{j}"),
            status=status,
            worker=ID(worker) if worker else None,
            claimed_by=world.owner if status != "todo" else None,
        )


def _learnuplets(api, **filters) -> list[dict]:
    r = api.get("learnuplet", **filters)
    assert r.status_code == 200, r.content
    return r.json()["learnuplets"]


# --- the suite -----------------------------------------------------------------------------------

COLLECTIONS = ("problem", "algo", "data", "learnuplet", "preduplet")


def test_get_all_documents(api):
    for collection_name in COLLECTIONS:
        rv = api.get(collection_name)
        assert rv.status_code == 200
    rv = api.get("dummy_field")
    assert rv.status_code == 404


def test_create_problem(api):
    rv = api.post(
        "problem",
        {
            "uuid": ID("P1"),
            "workflow": ID("W1"),
            "test_dataset": [ID("TD1"), ID("TD2")],
            "size_train_dataset": 4,
        },
    )
    assert rv.status_code == 201
    rv = api.post("problem", {"dummy": "ho"})
    assert rv.status_code == 400
    rv = api.get(f"problem/{ID('P1')}")
    assert rv.status_code == 200

    differs("uuid-ids")
    rv = api.post(
        "problem",
        {"uuid": "P1", "workflow": "W1", "test_dataset": ["TD1", "TD2"], "size_train_dataset": 4},
    )
    assert rv.status_code == 400 and "uuid" in rv.json()["Error"]


def test_create_algo(api):
    rv = api.post(
        "problem",
        {
            "uuid": ID("P2"),
            "workflow": ID("W2"),
            "test_dataset": [ID("DT1"), ID("DT2")],
            "size_train_dataset": 4,
        },
    )
    assert rv.status_code == 201
    nb_data = 10
    rv = api.post(
        "data",
        {
            "uuid": [ID(f"D{i}") for i in range(nb_data)] + [ID("DT1"), ID("DT2")],
            "problems": [ID("P2")],
        },
    )
    assert rv.status_code == 201
    assert rv.json()["new_learnuplets"] == 0
    rv = api.post("algo", {"uuid": ID("A"), "problem": ID("EMPTY"), "name": "Empty"})
    assert rv.status_code == 400
    rv = api.post("algo", {"uuid": ID("A"), "problemo": ID("P2"), "name": "algorator"})
    assert rv.status_code == 400
    rv = api.post("algo", {"uuid": ID("A"), "problem": ID("P2"), "name": "torsten"})
    assert rv.status_code == 201
    rv = api.get(f"algo/{ID('A')}")
    assert rv.status_code == 200
    uplets = _learnuplets(api, algo=ID("A"))
    assert len(uplets) == 3
    [learnuplet_0] = [u for u in uplets if u["model_start"] == ID("A") and u["rank"] == 0]
    assert learnuplet_0["status"] == "todo"
    [rank_1] = [u for u in uplets if u["model_start"] is None and u["rank"] == 1]
    assert rank_1["status"] == "todo"


def test_create_data(api, world):
    n_data, n_data_new = 10, 10
    problem = _problem(world, "P3", workflow="W3", test=("DT1", "DT2"), size=n_data_new // 2)
    for name in [f"DD{i}" for i in range(n_data)] + [f"DT{i}" for i in range(1, 3)]:
        Data.objects.create(project=world.project, owner=world.owner, uuid=ID(name)).problems.add(
            problem
        )
    # Upstream inserts algo "A3_0" but a learnuplet of algo "A30_s" (see the module docstring).
    _insert_learnuplets(
        world,
        1,
        n_train=n_data,
        n_test=1,
        problem="P3",
        workflow="W3",
        model_prefix="A3",
        worker="WW",
        perf=0.99,
        status="done",
    )
    new = [ID(f"D3{i}") for i in range(n_data_new)]
    rv = api.post("data", {"uuid": new, "problems": [ID("EMPTY")]})
    assert rv.status_code == 400
    rv = api.post("data", {"uuid": new, "problemos": [ID("P3")]})
    assert rv.status_code == 400
    rv = api.post("data", {"uuid": new, "problems": [ID("P3")]})
    assert rv.status_code == 201
    assert rv.json()["new_learnuplets"] == 2
    uplets = _learnuplets(api, problem=ID("P3"))
    assert len(uplets) == 3
    todo = [u for u in uplets if u["status"] == "todo"]
    assert len([u for u in todo if u["model_start"] is not None]) == 1
    assert len([u for u in todo if u["model_start"] is None]) == 1
    rv = api.get(f"data/{ID('D30')}")
    assert rv.status_code == 200


def test_request_prediction(api, world):
    _problem(world, "PP", workflow="WW", test=("TD1",), size=2)
    _insert_learnuplets(
        world,
        2,
        n_train=5,
        n_test=1,
        problem="PP",
        workflow="WW",
        worker="  ",
        status="done",
        perf=[0.96, 0.98],
    )
    rv = api.post("prediction", {"data": ID("DP"), "problem": ID("PP")})
    assert rv.status_code == 201
    preduplets = api.get("preduplet", problem=ID("PP"), status="todo").json()["preduplets"]
    assert len(preduplets) == 1
    # (Beyond upstream's assertions: the answer is the document, on the best model.)
    assert rv.json() == preduplets[0] and rv.json()["model"] == ID("MD_1_e")
    rv = api.post("prediction", {"problem": ID("PP")})
    assert rv.status_code == 400
    rv = api.post("prediction", {"data": ID("DPB1"), "problem": ID("IDONTEXIST")})
    assert rv.status_code == 400

    differs("uuid-ids")
    rv = api.post("prediction", {"data": "DP", "problem": ID("PP")})
    assert rv.status_code == 400


def test_set_uplet_worker(api, world):
    _insert_learnuplets(world, 1, uuid_prefix="id_")
    _insert_preduplets(world, 1, uuid_prefix="id_")
    for uplet in ("learnuplet", "preduplet"):
        rv = api.post(f"worker/{uplet}/{ID('id_0')}", {"worker": ID("bobor")})
        assert rv.status_code == 200
        found = api.get(uplet, uuid=ID("id_0"), worker=ID("bobor")).json()[f"{uplet}s"]
        assert len(found) == 1
        rv = api.post(f"worker/{uplet}/ad_0", {"worker": ID("bobor")})
        assert rv.status_code == 400
        rv = api.post(f"worker/{uplet}/{ID('id_0')}", {"rocker": "oups"})
        assert rv.status_code == 400
    rv = api.post(f"worker/uplet/{ID('id_0')}", {"worker": ID("oups")})
    assert rv.status_code == 404

    differs("uuid-ids")
    _insert_learnuplets(world, 1, uuid_prefix="bob_", model_prefix="BOB")
    rv = api.post(f"worker/learnuplet/{ID('bob_0')}", {"worker": "bobor"})
    assert rv.status_code == 400


def _perf_maps(n_train=5, n_test=5):
    train = {f"{i}": float(v) for i, v in enumerate(np.random.randn(n_train))}
    test = {f"{i}": float(v) for i, v in enumerate(np.random.randn(n_test))}
    return train, test


def test_report_perf_learnuplet_1(api, world):
    train_perf, test_perf = _perf_maps()
    _insert_learnuplets(
        world, 1, n_train=5, n_test=5, uuid_prefix="id_", status="pending", worker="bobor"
    )
    body = {"status": "done", "perf": 0.9, "train_perf": train_perf, "test_perf": test_perf}
    rv = api.post(f"learndone/{ID('id_0')}", body)
    assert rv.status_code == 200
    assert len(_learnuplets(api, uuid=ID("id_0"), perf=0.9)) == 1
    rv = api.post("learndone/ad_0", body)
    assert rv.status_code == 400
    rv = api.post(f"learndone/{ID('id_0')}", {"sttys": "oups", "perfff": 0.9})
    assert rv.status_code == 400


def test_report_perf_learnuplet_2(api, world):
    train_perf, test_perf = _perf_maps()
    common = {"n_train": 5, "n_test": 5, "worker": "bobor"}
    _insert_learnuplets(world, 1, uuid_prefix="id0_", status="done", rank=0, **common)
    _insert_learnuplets(world, 1, uuid_prefix="id1_", status="done", rank=1, **common)
    _insert_learnuplets(
        world, 1, uuid_prefix="id2_", status="pending", rank=2, model_prefix="B", **common
    )
    _insert_learnuplets(
        world, 1, uuid_prefix="id3_", status="todo", rank=3, model_prefix="N", **common
    )
    rv = api.post(f"learndone/{ID('id2_0')}", {"status": "failed"})
    assert rv.status_code == 200
    rv = api.post(
        f"learndone/{ID('id2_0')}",
        {"status": "done", "perf": 0.9, "train_perf": train_perf, "test_perf": test_perf},
    )
    assert rv.status_code == 200
    assert len(_learnuplets(api, uuid=ID("id2_0"), perf=0.9)) == 1
    found = _learnuplets(api, uuid=ID("id3_0"), status="todo", model_start=ID("B0_e"))
    assert len(found) == 1


def test_update_preduplet(api, world):
    _insert_preduplets(world, 1, uuid_prefix="id_", status="pending", worker="bobor")
    rv = api.post(f"preddone/{ID('id_0')}", {"status": "done", "prediction_storage_uuid": ID("id")})
    assert rv.status_code == 200
    assert len(api.get("preduplet", uuid=ID("id_0"), status="done").json()["preduplets"]) == 1
    rv = api.post("preddone/ad_0", {"status": "done", "prediction_storage_uuid": ID("id")})
    assert rv.status_code == 400
    rv = api.post(f"preddone/{ID('id_0')}", {"status": "done"})
    assert rv.status_code == 400
    rv = api.post(f"preddone/{ID('id_0')}", {"sttys": "oups", "prediction_storage_uuid": ID("id")})
    assert rv.status_code == 400

    differs("uuid-ids")
    _insert_preduplets(world, 1, uuid_prefix="p_", status="pending", worker="bobor")
    rv = api.post(f"preddone/{ID('p_0')}", {"status": "done", "prediction_storage_uuid": "id"})
    assert rv.status_code == 400
    assert Preduplet.objects.get(uuid=ID("p_0")).status == UpletStatus.PENDING


def test_get_filtered_document(api, world):
    _insert_learnuplets(world, 10)
    rv = api.get("learnuplet", uuid=ID("id_0"))
    assert rv.status_code == 200
    rv = api.get("learnupleto", uuid=ID("id_0"))
    assert rv.status_code == 404

    differs("unknown-filter")
    rv = api.get("learnuplet", uuido=ID("id_0"))
    assert rv.status_code == 400 and "uuido" in rv.json()["Error"]


def test_every_difference_is_used_and_documented():
    """Every documented difference is exercised by a translated assertion of this file, and
    every `differs(...)` names a documented one."""
    used = set(re.findall(r'differs\("([a-z-]+)"\)', Path(__file__).read_text()))
    assert used == set(DIFFERENCES), set(DIFFERENCES) ^ used
