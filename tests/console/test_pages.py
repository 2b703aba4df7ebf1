"""The console's pages through the Django test client, with real data made through the API:
each page renders its charts and pictures for global and project admins, project admins see only
their projects (everything of another project answers 404), members do not get in, and the task
actions abort and retry through the task service."""

import re

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from apps.tasks.models import Task, TaskState
from tests.factories import PASSWORD, add_member, make_project, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def console_urls(studio) -> dict[str, str]:
    run, evaluation = studio["run"], studio["evaluation"]
    images, volume = studio["images"], studio["volume"]
    item = images.items.order_by("filename").first()
    return {
        "index": reverse("admin:index"),
        "run": reverse("admin:console-run", args=[run.pk]),
        "run-loss": reverse("admin:console-run-chart", args=[run.pk, "loss"]),
        "run-accuracy": reverse("admin:console-run-chart", args=[run.pk, "accuracy"]),
        "compare": reverse("admin:console-compare", args=[run.experiment_id]),
        "compare-loss": reverse("admin:console-compare-chart", args=[run.experiment_id, "loss"]),
        "evaluation": reverse("admin:console-evaluation", args=[evaluation.pk]),
        "confusion": reverse("admin:console-confusion", args=[evaluation.pk]),
        "dataset": reverse("admin:console-dataset", args=[images.pk]),
        "distribution": reverse("admin:console-dataset-distribution", args=[images.pk]),
        "thumb": reverse("admin:console-dataset-thumb", args=[images.pk, item.pk]),
        "volume": reverse("admin:console-dataset", args=[volume.pk]),
        "slice": reverse("admin:console-dataset-slice", args=[volume.pk, 0, 2]),
        "task": reverse("admin:console-task", args=[run.task_id]),
        "backend": reverse("admin:console-backend", args=[studio["backend"].pk]),
    }


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_every_page_shows_its_charts_and_pictures(world, studio):
    urls = console_urls(studio)
    for user in (world.global_admin, world.owner):  # a global admin and the project admin
        client = login(user)
        pages = {name: client.get(url) for name, url in urls.items()}
        assert {n: r.status_code for n, r in pages.items()} == dict.fromkeys(urls, 200)
    html = {
        n: r.content.decode() for n, r in pages.items() if r["Content-Type"].startswith("text/html")
    }
    run = studio["run"]
    # Dashboard: the host, the run with its state, the datasets, evaluation and backend.
    assert 'data-host="cpu"' in html["index"] and run.pk in html["index"]
    assert studio["images"].name in html["index"] and "vol" in html["index"]
    # Run: two chart images whose SVGs hold a train and a val curve of 3 epochs each.
    assert html["run"].count('class="chart"') == 2
    for name in ("run-loss", "run-accuracy"):
        svg = pages[name].content.decode()
        assert pages[name]["Content-Type"] == "image/svg+xml"
        lines = re.findall(r'<polyline class="series"[^>]*points="([^"]+)"', svg)
        assert len(lines) == 2 and all(len(pts.split()) == 3 for pts in lines), svg[:500]
    # Compare: the run's curves and its configuration.
    assert (
        "architecture" in html["compare"] and "<polyline" in pages["compare-loss"].content.decode()
    )
    # Evaluation: a 3x3 heatmap, the per-class table and pictures of the worst errors.
    assert pages["confusion"].content.decode().count('class="cell"') == 9
    for cls in ("bars", "dots", "ring"):
        assert f"<td>{cls}</td>" in html["evaluation"]
    for src in re.findall(
        r'<figure class="tile error-tile"><img src="([^"]+)"', html["evaluation"]
    ):
        assert client.get(src)["Content-Type"] == "image/png"
    # Dataset: 24 thumbnails with their class and split, and the class distribution.
    assert html["dataset"].count('<figure class="tile">') == 24
    assert re.search(r'class="split split-(train|val|test)"', html["dataset"])
    assert pages["thumb"]["Content-Type"] == "image/png"
    assert pages["distribution"].content.decode().count('class="bar"') == 3
    filtered = client.get(urls["dataset"] + "?class=dots").content.decode()
    assert filtered.count('<figure class="tile">') == 8 and "bars/" not in filtered
    # Volume: slices with the label overlay (coloured pixels in a grey volume).
    assert html["volume"].count('class="tile slice"') == 4
    assert pages["slice"]["Content-Type"] == "image/png"
    # Task, backend: progress, the paste-able URL and its copy button.
    assert 'data-live-task="' in html["task"] and "finished" in html["task"]
    backend = studio["backend"]
    assert f"/ml/{backend.pk}/" in html["backend"] and 'data-copy="#backend-url"' in html["backend"]


def test_project_admins_see_only_their_projects(world, studio):
    urls = console_urls(studio)
    # mallory administers project B only: every page of A's objects is a 404, like a missing one.
    outsider = login(world.outsider)
    index = outsider.get(urls["index"])
    assert index.status_code == 200
    body = index.content.decode()
    assert studio["run"].pk not in body and studio["images"].name not in body
    assert world.project.name not in body
    for name, url in urls.items():
        if name != "index":
            assert outsider.get(url).status_code == 404, name
    assert (
        outsider.get(urls["index"] + f"?project={world.project.pk}")
        .content.decode()
        .count(studio["run"].pk)
        == 0
    )
    token = outsider.post(reverse("admin:console-token"), {"project": world.project.pk})
    assert token.status_code == 404
    # Members and viewers of A are not operators: no console.
    for user in (world.member, world.viewer):
        response = login(user).get(urls["run"])
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    # The project admin gets a token for A (for the live pages' websocket and SSE).
    owner = login(world.owner)
    token = owner.post(reverse("admin:console-token"), {"project": world.project.pk})
    assert token.status_code == 200 and token.json()["token"].count(".") == 2


def test_project_admins_log_in_and_members_do_not(world):
    client = Client()
    r = client.post("/admin/login/", {"username": world.owner.username, "password": PASSWORD})
    assert r.status_code == 302, r.content[:500]
    assert client.get("/admin/").status_code == 200
    member = Client()
    r = member.post("/admin/login/", {"username": world.member.username, "password": PASSWORD})
    assert r.status_code == 200 and "correct username and password" in r.content.decode()
    # A project admin sees no model pages (no Django permissions), only the console.
    assert client.get("/admin/tasks/task/").status_code == 403


def test_task_actions_abort_and_retry(world):
    other_admin = make_user("erin")
    add_member(world.project, other_admin, "admin")
    task = Task.objects.create(
        project=world.project,
        owner=world.member,
        kind="train",
        name="queued one",
        state=TaskState.QUEUED,
    )
    client = login(other_admin)
    page = client.get(reverse("admin:console-task", args=[task.pk])).content.decode()
    abort_url = reverse("admin:console-task-abort", args=[task.pk])
    assert f'<form method="post" action="{abort_url}" data-action="abort">' in page
    assert 'data-action="retry" hidden>' in page  # shown by the page once the task ends
    r = client.post(reverse("admin:console-task-abort", args=[task.pk]), follow=True)
    task.refresh_from_db()
    assert task.state == TaskState.ABORTED and "Abort requested." in r.content.decode()
    r = client.post(reverse("admin:console-task-retry", args=[task.pk]), follow=True)
    task.refresh_from_db()
    assert task.state == TaskState.QUEUED and "queued again" in r.content.decode()
    assert client.get(reverse("admin:console-task-abort", args=[task.pk])).status_code == 405
    # Another project's admin cannot act on it.
    assert (
        login(world.outsider).post(reverse("admin:console-task-abort", args=[task.pk])).status_code
        == 404
    )
    task.refresh_from_db()
    assert task.state == TaskState.QUEUED


def test_failed_tasks_show_on_the_dashboard_with_their_traceback(world):
    from django.utils import timezone

    task = Task.objects.create(
        project=world.project,
        owner=world.owner,
        kind="train",
        name="broken",
        state=TaskState.FAILED,
        error="ValueError: boom",
        traceback="Traceback ...\nValueError: boom",
        finished_at=timezone.now(),
    )
    other = make_project(world.outsider, name="B2")
    Task.objects.create(
        project=other,
        owner=world.outsider,
        kind="train",
        name="secret-failure",
        state=TaskState.FAILED,
        error="nope",
        finished_at=timezone.now(),
    )
    page = login(world.owner).get("/admin/").content.decode()
    assert "broken" in page and "ValueError: boom" in page and "secret-failure" not in page
    assert "secret-failure" in login(world.global_admin).get("/admin/").content.decode()
    detail = login(world.owner).get(reverse("admin:console-task", args=[task.pk])).content.decode()
    assert 'data-action="retry">' in detail and "Traceback ..." in detail


def test_one_tasks_section():
    from django_dramatiq.models import Task as DramatiqTask

    assert not admin.site.is_registered(DramatiqTask)
    assert admin.site.is_registered(Task)


def test_malformed_and_unknown_ids_are_404(world):
    client = login(world.global_admin)
    for url in (
        "/admin/console/runs/nope/",
        "/admin/console/datasets/not-a-uuid/",
        "/admin/console/datasets/00000000-0000-0000-0000-000000000000/samples/0.png",
        "/admin/console/tasks/123/",
        "/admin/console/evaluations/x/confusion.svg",
        "/admin/console/backends/x/",
    ):
        assert client.get(url).status_code == 404, url
