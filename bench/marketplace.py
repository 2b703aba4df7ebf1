"""Marketplace: (1) a built-in `learnuplet` job (claim, load two datasets, train, per-file
accuracy, save the model checkpoint, report) versus a hand-written torch loop plus the same
accuracies on tensors already in memory; (2) `GET /orchestrator/learnuplet` over Basic auth
versus a bare Django view doing the same Basic check (the remembered-credentials cache the gateway
keeps, see apps/marketplace/http.py), finding the account's project and running the same query
and documents, both in-process, and its query count at two collection sizes (must be equal)."""

from __future__ import annotations

import base64
import hmac
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


def _basic_user(request):
    """The account of the request's Basic credentials, as the gateway checks them, written
    plainly: credentials it checked in the last minute are remembered in the cache under an HMAC of
    user and password (the user re-read, active, its password hash unchanged); others cost a
    password hash and are remembered. None when they do not match. No throttling (the gateway's
    own extra)."""
    import hashlib

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.cache import cache

    scheme, _, encoded = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    username, _, password = base64.b64decode(encoded).decode().partition(":")
    key = (
        "bench:basic:"
        + hmac.new(
            settings.SECRET_KEY.encode(), f"{username}\0{password}".encode(), hashlib.sha256
        ).hexdigest()
    )

    def fingerprint(user) -> str:
        return hashlib.sha256(user.password.encode()).hexdigest()[:16]

    users = get_user_model().objects
    remembered = cache.get(key)
    if remembered:
        pk, _, print_ = remembered.partition(":")
        user = users.filter(pk=pk, is_active=True).first()
        if user is not None and fingerprint(user) == print_:
            return user
    user = users.filter(username=username, is_active=True).first()
    if user is None or not user.check_password(password):
        return None
    cache.set(key, f"{user.pk}:{fingerprint(user)}", 60)
    return user


def _bare_view(request):
    from django.http import JsonResponse

    from apps.accounts.models import Membership
    from apps.marketplace.models import Learnuplet
    from apps.marketplace.protocol import learnuplet_document

    user = _basic_user(request)
    if user is None:
        return JsonResponse({"Error": "Invalid username/password."}, status=401)
    projects = list(Membership.objects.filter(user=user).values_list("project_id", flat=True)[:2])
    if len(projects) != 1:
        return JsonResponse({"Error": "Send the X-Orchard-Project header."}, status=403)
    rows = (
        Learnuplet.objects.filter(project_id=projects[0], status="todo")
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
            path("bare/learnuplets", _bare_view),
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
            bare = "/bare/learnuplets"
            wrong = Client(HTTP_AUTHORIZATION=f"Basic {base64.b64encode(b'x:y').decode()}")
            for url in (api, bare):
                assert wrong.get(url).status_code == 401, url  # both sides check the password
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
            f"GET /orchestrator/learnuplet, {count} documents, Basic auth both sides, in-process",
            statistics.median(gateway) * 1e3,
            statistics.median(plain_view) * 1e3,
            "ms",
            goal="<= 1.5",
            notes="Basic auth (remembered credentials) + tenancy + protocol JSON vs a bare "
            "Django view doing the same Basic check, the account's project and the same query "
            "and documents; in-process test client (the gateway's extra: DRF, throttle "
            "bookkeeping, the scoped base's membership check)",
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
    `http.client` POST of the same bytes to the same server; and what the job is made of, each
    measured alone: the same POST through the outbound policy (`apps.core.outbound.
    pinned_request`, as the job calls it) and an empty task through the same engine call
    (`task_run` of a handler that returns at once: claim, state events, heartbeat, finish)."""
    vendor = django_env.setup()
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from django.conf import settings

    from apps.accounts.models import User
    from apps.accounts.services import project_create
    from apps.core.outbound import pinned_request, url_origin
    from apps.marketplace import services
    from apps.marketplace.models import ComputeEndpoint, ComputePush
    from apps.tasks import registry
    from apps.tasks.runner import task_run
    from apps.tasks.services import task_create

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

    def policy_posts() -> float:
        push = ComputePush.objects.filter(project=project).latest("id")
        body, headers = push.body.encode(), {"Content-Type": "application/json"}
        start = time.perf_counter()
        for _ in range(pushes):
            status, _, _ = pinned_request(
                "POST",
                push.url,
                url_origin(push.url),
                headers,
                allow_private=True,
                max_bytes=64 * 1024,
                deadline=time.monotonic() + 10,
                body=body,
            )
            assert status == 202, status
        return (time.perf_counter() - start) / pushes

    registry.register("bench_empty", lambda ctx: {}, time_limit_s=60, max_attempts=1)

    def empty_tasks() -> float:
        tasks = [
            task_create(project=project, actor=owner, kind="bench_empty", name="empty")
            for _ in range(pushes)
        ]
        start = time.perf_counter()
        for task in tasks:
            task_run(str(task.pk))
        return (time.perf_counter() - start) / pushes

    try:
        orchard, plain, policy, empty = [], [], [], []
        for _ in range(ctx.repeats):  # interleaved so drift hits every side alike
            orchard.append(orchard_pushes())
            plain.append(plain_posts())
            policy.append(policy_posts())
            empty.append(empty_tasks())
    finally:
        server.shutdown()
    job_ms, bare_ms = statistics.median(orchard) * 1e3, statistics.median(plain) * 1e3
    policy_ms, empty_ms = statistics.median(policy) * 1e3, statistics.median(empty) * 1e3
    return [
        Row(
            "marketplace.push",
            "one learnuplet POSTed to a compute API on loopback",
            job_ms,
            bare_ms,
            "ms",
            goal="<= 1.3 x (empty task + policy POST): push_engine",
            notes=(
                "compute_push job in-process (claim, outbox row, DNS + address check, pinned "
                f"POST, delivered bookkeeping; {vendor}) vs a bare http.client POST of the same "
                f"bytes; alone: the policy POST {policy_ms:.3g} ms, an empty task through the "
                f"engine {empty_ms:.3g} ms; {pushes} pushes x {ctx.repeats}"
            ),
        ),
        Row(
            "marketplace.push_policy",
            "the same POST through the outbound policy / bare",
            policy_ms,
            bare_ms,
            "ms",
            goal="<= 1.5",
            notes="apps.core.outbound.pinned_request (resolve, address check, pinned "
            "connection, bounded answer) vs a bare http.client POST",
        ),
        Row(
            "marketplace.push_engine",
            "push job / (empty engine task + policy POST)",
            job_ms,
            empty_ms + policy_ms,
            "ms",
            goal="<= 1.3",
            notes="what the push adds to the job engine's per-task cost and the POST: the "
            "outbox row read, the delivered bookkeeping, progress",
        ),
    ]
