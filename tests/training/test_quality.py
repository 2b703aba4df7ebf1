"""Quality: a default experiment on the digits demo set reaches at least 97 % test accuracy."""

import pytest

from tests.conftest import client_for
from tests.training.conftest import create_experiment, run_url, start_run, wait_for


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_default_experiment_reaches_97_percent_on_the_digits(world, digits, stub_worker):
    train, test = digits
    client = client_for(world.member)
    # Only the data is chosen: cnn_small on 1x8x8, Adam 2e-3, 20 epochs of 32, on the CPU.
    exp = create_experiment(client, world.project, dataset_id=str(train.pk))
    assert (exp["architecture"], exp["epochs"], exp["devices"]) == ("cnn_small", 20, ["cpu"])
    run = start_run(client, world.project, exp["id"])
    done = wait_for(
        lambda: (
            (d := client.get(run_url(world.project, run["run_id"])).json()["data"])["status"]
            in ("completed", "failed")
            and d
        ),
        300,
    )
    assert done["status"] == "completed", done["error"]
    assert done["epochs_completed"] == 20 and len(done["metrics"]["epochs"]) == 20
    r = client.post(
        f"/api/evaluation/{world.project.pk}",
        {
            "experiment_id": exp["id"],
            "run_id": done["id"],
            "checkpoint": "last",
            "dataset_id": str(test.pk),
        },
        format="json",
    )
    assert r.status_code == 200, r.content
    url = f"/api/evaluation/{world.project.pk}/{r.json()['data']['id']}"
    result = wait_for(
        lambda: (d := client.get(url).json()["data"])["status"] in ("completed", "failed") and d,
        120,
    )
    assert result["status"] == "completed", result["error"]
    assert result["num_samples"] == 360
    assert result["results"]["accuracy"] >= 0.97, result["results"]["accuracy"]
    assert min(c["recall"] for c in result["results"]["per_class"].values()) >= 0.85
