"""Marketplace: (1) a built-in `learnuplet` job (claim, load two datasets, train, per-file
accuracy, save the model checkpoint, report) versus a hand-written torch loop plus the same
accuracies on tensors already in memory; (2) `GET /orchestrator/learnuplet` over Basic auth
versus a bare Django view running the same query and documents, and its query count at two
collection sizes (must be equal)."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from bench import django_env
from bench.harness import Context, Row, row
from bench.training import TEMPLATE, _mnist_files, _plain_loop, discard_dataset

urlpatterns: list = []


def _bare_view(request, project_id):
    from django.http import JsonResponse

    from apps.marketplace.models import Learnuplet
    from apps.marketplace.protocol import learnuplet_document

    rows = (
        Learnuplet.objects.filter(project_id=project_id, status="todo")
        .select_related("problem", "algo")
        .order_by("created_at", "id")
    )
    return JsonResponse({"learnuplets": [learnuplet_document(u) for u in rows]})


def _market(project, owner, *, data: list[str], test: list[str], size: int):
    from apps.core.tenancy import project_access
    from apps.marketplace import services

    access = project_access(user=owner, project_id=project.pk)
    problem = services.problem_create(
        access=access,
        uuid=str(uuid.uuid4()),
        workflow=str(uuid.uuid4()),
        test_dataset=test,
        size_train_dataset=size,
    )
    services.data_create(access=access, uuids=[*data, *test], problem_uuids=[str(problem.uuid)])
    return access, problem


@row("marketplace")
def marketplace(ctx: Context) -> list[Row]:
    vendor = django_env.setup()
    import base64

    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from django.urls import include, path

    from apps.accounts.models import User
    from apps.accounts.services import project_create
    from apps.clusters.services import cluster_create
    from apps.datasets.imports import dataset_import_mnist
    from apps.datasets.selectors import dataset_arrays
    from apps.marketplace import services
    from apps.marketplace.models import Learnuplet
    from apps.tasks.runner import task_run
    from ml.networks import build_network
    from ml.templates import parse_template
    from ml.training import evaluate

    device = torch.device("cuda" if ctx.device == "cuda" else "cpu")
    settings.MARKETPLACE_BUILTIN_COMPUTE = True
    n = 2_000 if ctx.quick else 20_000
    epochs, batch_size, lr = 2, 64, 2e-3
    settings.MARKETPLACE_TRAIN = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "optimizer": "adam",
        "seed": 0,
    }
    password = "bench-password-12345"
    owner = User.objects.create_user(f"bench-mkt-{time.time_ns()}", password=password)
    project = project_create(actor=owner, name=f"bench-mkt-{time.time_ns()}")
    datasets = []
    with tempfile.TemporaryDirectory(prefix="orchard-bench-mkt-") as tmp:
        for name, count in (("train", n), ("test", max(500, n // 6))):
            directory = Path(tmp) / name
            directory.mkdir()
            images, labels = _mnist_files(directory, count)
            datasets.append(
                dataset_import_mnist(
                    project=project, actor=owner, name=name, images=images, labels=labels
                )
            )
    train_set, test_set = datasets
    x_np, y_np = dataset_arrays(train_set, mmap=False)
    xt_np, yt_np = dataset_arrays(test_set, mmap=False)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    xt, yt = torch.from_numpy(xt_np).to(device), torch.from_numpy(yt_np).to(device)
    access, problem = _market(
        project, owner, data=[str(train_set.pk)], test=[str(test_set.pk)], size=1
    )
    template = parse_template(TEMPLATE)

    def run_job() -> float:
        cluster = cluster_create(
            project=project, actor=owner, name="algo", template_text=TEMPLATE, seed=0
        )
        algo, _ = services.algo_create(
            access=access, uuid=str(cluster.pk), name="bench", problem_uuid=str(problem.uuid)
        )
        uplet = Learnuplet.objects.get(algo=algo, rank=0)
        start = time.perf_counter()
        task_run(str(uplet.task_id))
        elapsed = time.perf_counter() - start
        uplet.refresh_from_db()
        if uplet.status != "done":
            raise RuntimeError(f"learnuplet {uplet.status}: {uplet.task.error}")
        return elapsed

    def run_plain() -> float:
        model = build_network(template, seed=0).to(device)
        start = time.perf_counter()
        _plain_loop(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, device=device)
        evaluate(model, x, y)
        evaluate(model, xt, yt)
        return time.perf_counter() - start

    try:
        run_plain()
        plain, orchard = [], []
        for _ in range(ctx.repeats):
            plain.append(run_plain())
            orchard.append(run_job())

        # -- the gateway's list route ------------------------------------------------------
        global urlpatterns
        urlpatterns = [
            path("bare/<project_id>/learnuplets", _bare_view),
            path("", include("config.urls")),
        ]
        token = base64.b64encode(f"{owner.username}:{password}".encode()).decode()
        client = Client(HTTP_AUTHORIZATION=f"Basic {token}")
        small, large = (20, 100) if ctx.quick else (50, 500)
        _market(
            project,
            owner,
            data=[str(uuid.uuid4()) for _ in range(small)],
            test=[str(uuid.uuid4())],
            size=1,
        )
        requests = 10 if ctx.quick else 50
        with override_settings(ROOT_URLCONF="bench.marketplace", MARKETPLACE_BUILTIN_COMPUTE=False):

            def external_algo(problem_uuid):
                services.algo_create(
                    access=access,
                    uuid=str(uuid.uuid4()),
                    name="external",
                    problem_uuid=problem_uuid,
                )

            from apps.marketplace.models import Problem

            last = Problem.objects.filter(project=project).order_by("-id").first()
            external_algo(str(last.uuid))
            api = "/orchestrator/learnuplet?status=todo"
            bare = f"/bare/{project.pk}/learnuplets"
            queries = {}
            with CaptureQueriesContext(connection) as captured:
                assert client.get(api).status_code == 200
            queries[small] = len(captured.captured_queries)
            for _ in range(large // small - 1):
                external_algo(str(last.uuid))
            assert client.get(api).json()["learnuplets"]
            with CaptureQueriesContext(connection) as captured:
                assert client.get(api).status_code == 200
            queries[large] = len(captured.captured_queries)
            count = len(client.get(api).json()["learnuplets"])
            assert count == len(client.get(bare).json()["learnuplets"])

            def timed(url):
                samples = []
                for _ in range(requests):
                    start = time.perf_counter()
                    client.get(url)
                    samples.append(time.perf_counter() - start)
                return statistics.median(samples)

            gateway, plain_view = [], []
            for _ in range(ctx.repeats):
                gateway.append(timed(api))
                plain_view.append(timed(bare))
    finally:
        for dataset in datasets:
            discard_dataset(dataset)
    return [
        Row(
            "marketplace.learnuplet",
            f"{n} samples 784-400-10, {epochs} epochs, bs {batch_size} ({device.type})",
            statistics.median(orchard),
            statistics.median(plain),
            "s",
            goal="<= 1.10",
            notes=(
                "learnuplet job in-process (claim, datasets, fit, per-file accuracy, checkpoint, "
                f"report; {vendor}) vs a hand-written loop + the same accuracies on tensors in "
                f"memory; best-of ratio {min(orchard) / min(plain):.3f}"
            ),
            extra={"orchard_all": orchard, "baseline_all": plain},
        ),
        Row(
            "marketplace.list",
            f"GET /orchestrator/learnuplet, {count} documents",
            statistics.median(gateway) * 1e3,
            statistics.median(plain_view) * 1e3,
            "ms",
            goal="<= 1.5",
            notes="Basic auth + tenancy + protocol JSON vs bare Django view, same query; "
            "in-process test client, and the bare view skips the auth and tenancy",
        ),
        Row(
            "marketplace.queries",
            f"queries per list of {small} / {large} learnuplets",
            queries[small],
            queries[large],
            "",
            goal="ratio = 1",
        ),
    ]


@row("marketplace.push")
def marketplace_push(ctx: Context) -> list[Row]:
    """(3) compute push: a `compute_push` job delivering one learnuplet to a compute API on
    loopback (outbox row, resolve + address check, pinned POST, bookkeeping) versus a bare
    `http.client` POST of the same bytes to the same server."""
    django_env.setup()
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from django.conf import settings

    from apps.accounts.models import User
    from apps.accounts.services import project_create
    from apps.marketplace import services
    from apps.marketplace.models import ComputeEndpoint, ComputePush
    from apps.tasks.runner import task_run

    class Accept(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    settings.MARKETPLACE_COMPUTE_ALLOW_PRIVATE = True
    settings.MARKETPLACE_BUILTIN_COMPUTE = False
    owner = User.objects.create_user(f"bench-push-{time.time_ns()}", password="x" * 20)
    project = project_create(actor=owner, name=f"bench-push-{time.time_ns()}")
    ComputeEndpoint.objects.create(project=project, owner=owner, url=f"http://127.0.0.1:{port}")
    access, problem = _market(
        project, owner, data=[str(uuid.uuid4())], test=[str(uuid.uuid4())], size=1
    )
    pushes = 5 if ctx.quick else 50

    def orchard_pushes() -> float:
        rows = []
        for _ in range(pushes):
            services.algo_create(
                access=access, uuid=str(uuid.uuid4()), name="ext", problem_uuid=str(problem.uuid)
            )
            rows.append(ComputePush.objects.filter(project=project).latest("id"))
        start = time.perf_counter()
        for push in rows:
            task_run(str(push.task_id))
        elapsed = (time.perf_counter() - start) / pushes
        if ComputePush.objects.filter(pk__in=[p.pk for p in rows], state="delivered").count() != (
            pushes
        ):
            raise RuntimeError("a push was not delivered")
        return elapsed

    def plain_posts() -> float:
        body = ComputePush.objects.filter(project=project).latest("id").body.encode()
        start = time.perf_counter()
        for _ in range(pushes):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/learn", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
            conn.close()
        return (time.perf_counter() - start) / pushes

    try:
        orchard, plain = [], []
        for _ in range(ctx.repeats):
            orchard.append(orchard_pushes())
            plain.append(plain_posts())
    finally:
        server.shutdown()
    return [
        Row(
            "marketplace.push",
            "one learnuplet POSTed to a compute API on loopback",
            statistics.median(orchard) * 1e3,
            statistics.median(plain) * 1e3,
            "ms",
            goal="<= 3",
            notes=(
                "compute_push job in-process (claim, outbox row, DNS + address check, pinned "
                "POST, delivered bookkeeping) vs a bare http.client POST of the same bytes"
            ),
        )
    ]
