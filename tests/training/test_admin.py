"""Admin pages of the studio: a run's change view draws its metric curves (inline SVG)."""

import pytest
from django.test import Client

from apps.tasks.models import Task, TaskEvent
from apps.training.admin import metric_curves_svg
from apps.training.models import Evaluation, Experiment, Run

pytestmark = pytest.mark.django_db


def test_change_views_render_and_runs_show_their_curves(world):
    experiment = Experiment.objects.create(project=world.project, owner=world.owner, name="e")
    task = Task.objects.create(
        project=world.project, owner=world.owner, kind="studio_train", name="t", state="finished"
    )
    run = Run.objects.create(
        project=world.project, owner=world.owner, experiment=experiment, task=task
    )
    for epoch, loss in ((1, 2.0), (2, 1.0), (3, 0.5)):
        TaskEvent.objects.create(
            task=task,
            seq=epoch,
            kind="epoch_end",
            data={"epoch": epoch, "loss": loss, "accuracy": 0.3 * epoch, "val_accuracy": None},
        )
    evaluation = Evaluation.objects.create(
        project=world.project, owner=world.owner, experiment=experiment, run=run, name="ev"
    )
    client = Client()
    client.force_login(world.global_admin)
    page = client.get(f"/admin/training/run/{run.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("<polyline") == 2  # loss and accuracy (no validation values)
    assert "train loss (0.5..2)" in html and "<td>3</td>" in html
    for url in (
        f"/admin/training/experiment/{experiment.pk}/change/",
        f"/admin/training/evaluation/{evaluation.pk}/change/",
        "/admin/training/run/?q=e",
    ):
        assert client.get(url).status_code == 200, url
    # The stop action leaves ended runs alone.
    r = client.post(
        "/admin/training/run/", {"action": "stop_runs", "_selected_action": [run.pk]}, follow=True
    )
    assert "Stop requested for 0 run(s)." in r.content.decode()


def test_curves_without_history():
    assert "No epoch has completed yet" in metric_curves_svg([])
