"""Lists cost a constant number of queries whatever the page size."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.tasks.models import Task
from apps.training.models import Evaluation, Experiment, Run
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _rows(world, n=6):
    for i in range(n):
        exp = Experiment.objects.create(project=world.project, owner=world.owner, name=f"e{i}")
        task = Task.objects.create(
            project=world.project, owner=world.owner, kind="studio_train", name=f"t{i}"
        )
        run = Run.objects.create(
            project=world.project, owner=world.owner, experiment=exp, task=task
        )
        Evaluation.objects.create(
            project=world.project, owner=world.owner, experiment=exp, run=run, name=f"v{i}"
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
    for size in (1, 6):
        with CaptureQueriesContext(connection) as captured:
            r = client.get(url, {"page_size": size})
        assert r.status_code == 200 and len(r.json()["data"]["items"]) == size
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts
