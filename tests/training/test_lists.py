"""Lists cost a constant number of queries whatever the page size."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.tasks.models import Task
from apps.training.models import Evaluation, Experiment, Run
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _rows(world, n=200):
    own = {"project": world.project, "owner": world.owner}
    exps = Experiment.objects.bulk_create([Experiment(**own, name=f"e{i}") for i in range(n)])
    tasks = Task.objects.bulk_create(
        [Task(**own, kind="studio_train", name=f"t{i}") for i in range(n)]
    )
    runs = Run.objects.bulk_create(
        [Run(**own, experiment=exp, task=task) for exp, task in zip(exps, tasks, strict=True)]
    )
    Evaluation.objects.bulk_create(
        [
            Evaluation(**own, experiment=run.experiment, run=run, name=f"v{i}")
            for i, run in enumerate(runs)
        ]
    )


@pytest.mark.parametrize(
    "path",
    ["training/{p}/experiments", "training/{p}/runs", "evaluation/{p}"],
)
def test_list_queries_do_not_grow_with_the_page(world, path):
    _rows(world)
    client = client_for(world.member)
    url = "/api/" + path.format(p=world.project.pk)
    counts = []
    for size in (10, 200):
        with CaptureQueriesContext(connection) as captured:
            r = client.get(url, {"page_size": size})
        assert r.status_code == 200 and len(r.json()["data"]["items"]) == size
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts
