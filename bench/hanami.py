"""Hanami accuracy: a 64-128-10 cluster trained through the Hanami REST API, with the requests the
SDK sends (tests/hanami/test_workflow.py: token, cluster from a template, MNIST-format digits over
the upload socket, train task, request task, `dataset/check`), on sklearn's 8x8 digits, in the
embedded mode `make run` starts (`bench.deployment.shared_embedded`: the site the
export row uses too), versus a plain torch loop with the
same network, the same split and the same hyper-parameters (read back from the train task's
stored `config` over the main API, so both sides do the same work even if the defaults change).

- hanami.accuracy: held-out accuracy (%) from `dataset/check` / the plain loop's on the same
  test images (higher is better).
- hanami.train_s: the train task's time in the worker (started -> finished: data, fit, weights
  stored) / the plain loop's, both on one torch thread (the in-process worker uses one), with
  the client polling the task every 50 ms as the SDK's workflow does.
- hanami.train_s_slow_poll: the same train task (another cluster) with the client polling every
  second: the platform's own cost without the polls' share of the server (each poll runs in the
  process that trains, and shares its GIL and the machine's two cores).
"""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np

from bench.harness import Context, Row, row

TEST_SIZE = 360  # as the demo's digits-test


def _split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    return train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=0
    )  # x_train, x_test, y_train, y_test


def plain_loop(x_train, y_train, x_test, y_test, config: dict, scale: float):
    """The same network, optimiser, batches and epochs written by hand; (accuracy %, seconds)."""
    import torch
    from torch import nn

    if config.get("optimizer", "adam") != "adam" or config.get("scheduler"):
        raise RuntimeError(f"the plain loop writes Adam without a scheduler, not {config}")
    torch.manual_seed(config.get("seed") or 0)

    def rows(images):
        return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255 * scale)

    x, y = rows(x_train), torch.from_numpy(y_train.astype(np.int64))
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(
        net.parameters(),
        lr=config["learning_rate"],
        weight_decay=config.get("weight_decay") or 0.0,
    )
    loss_fn = nn.CrossEntropyLoss()
    batch = config["batch_size"]
    threads = torch.get_num_threads()
    # One thread, as the embedded mode's in-process worker (on a busy 2-core machine two
    # threads made this loop 30 times slower).
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        net.train()
        for _ in range(config["epochs"]):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch):
                idx = perm[i : i + batch]
                opt.zero_grad(set_to_none=True)
                loss_fn(net(x[idx]), y[idx]).backward()
                opt.step()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    net.eval()
    with torch.inference_mode():
        predicted = net(rows(x_test)).argmax(dim=1).numpy()
    return float((predicted == y_test).mean() * 100), seconds


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@row("hanami.accuracy")
def hanami_accuracy(ctx: Context) -> list[Row]:
    import base64

    from bench.deployment import ADMIN_PASSWORD, shared_embedded
    from bench.directio import _api, _cluster_in, hanami_call, run_task, upload_mnist
    from ml.templates import DIGITS_64_128_10

    x_train, x_test, y_train, y_test = _split()
    results = []
    dep = shared_embedded(extra_env={"LOGIN_THROTTLE_RATE": "1000/min"})
    base = dep.base
    token = hanami_call(base, "POST", "token", {"id": "admin", "password": ADMIN_PASSWORD})["token"]
    train_set = upload_mnist(base, token, "digits-train-sdk", x_train, y_train)
    test_set = upload_mnist(base, token, "digits-test-sdk", x_test, y_test)
    template = base64.b64encode(DIGITS_64_128_10.encode()).decode()
    for i in range(1 if ctx.quick else ctx.repeats):
        cluster = hanami_call(
            base, "POST", "cluster", {"name": f"acc{i}", "template": template}, token
        )["uuid"]
        train_id, train_s = run_task(base, token, "train", cluster, train_set, poll=0.05)
        slow_cluster = hanami_call(
            base, "POST", "cluster", {"name": f"acc{i}-slow", "template": template}, token
        )["uuid"]
        slow_id, _ = run_task(base, token, "train", slow_cluster, train_set, poll=1.0)
        result_id, _ = run_task(base, token, "request", cluster, test_set, poll=0.05)
        check = hanami_call(
            base,
            "POST",
            "dataset/check",
            {"result_uuid": result_id, "dataset_uuid": test_set},
            token,
        )
        # The stored hyper-parameters of the train task, over the main API.
        jwt = dep.token
        project = next(
            p["id"]
            for p in _api(base, "GET", "/api/projects", token=jwt)
            if _cluster_in(base, jwt, p["id"], cluster)
        )
        task = _api(base, "GET", f"/api/projects/{project}/tasks/{train_id}", token=jwt)
        slow = _api(base, "GET", f"/api/projects/{project}/tasks/{slow_id}", token=jwt)
        config, scale = task["result"]["config"], task["result"]["input_scale"]
        worker_s = _ts(task["finished_at"]) - _ts(task["started_at"])
        slow_s = _ts(slow["finished_at"]) - _ts(slow["started_at"])
        plain_acc, plain_s = plain_loop(x_train, y_train, x_test, y_test, config, scale)
        results.append((check["accuracy"], plain_acc, train_s, worker_s, plain_s, slow_s))
    orchard, plain, train_s, worker_s, plain_s, slow_s = (
        float(np.median([r[k] for r in results])) for k in range(6)
    )
    return [
        Row(
            "hanami.accuracy",
            f"held-out % on {TEST_SIZE} digits, Hanami API / plain loop",
            orchard,
            plain,
            "%",
            goal=">= 0.98 (higher is better)",
            notes=f"{config['epochs']} epochs, batch {config['batch_size']}, "
            f"lr {config['learning_rate']}, {len(results)} cluster(s), embedded mode; "
            "the plain loop's initial weights are its own (seed 0)",
            extra={"runs": results},
        ),
        Row(
            "hanami.train_s",
            "train task in the worker / plain loop, s",
            worker_s,
            plain_s,
            "s",
            goal="<= 1.2",
            notes="the task's started_at -> finished_at (loads the data, fits, stores the "
            f"weights) vs the loop alone, both on one torch thread; POST -> finished as the "
            f"client saw it: {train_s:.2f} s",
        ),
        Row(
            "hanami.train_s_slow_poll",
            "the same, client polling every 1 s",
            slow_s,
            plain_s,
            "s",
            goal="<= 1.2",
            notes="hanami.train_s's task on another cluster, polled every second instead of "
            "every 50 ms: the worker's own overhead without the polls' share of the server",
        ),
    ]
