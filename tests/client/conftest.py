"""A live embedded Orchard for the client and CLI tests: `make run`'s processes (daphne with the
in-process worker, dev settings, SQLite) on a free port with a data dir of its own, started once
for the whole folder. The tests reach it only over HTTP and websockets, as a user's client does.

`orchard_client` is imported from clients/python (installed with `pip install -e clients/python`;
when it is not, the folder is put on sys.path and the CLI runs as `python -m orchard_client`)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from bench.deployment import ADMIN_PASSWORD, embedded
from tests.client.helpers import CuttingProxy

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SRC = ROOT / "clients" / "python"
try:
    import orchard_client  # noqa: F401
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(CLIENT_SRC))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    extra = dict(
        LOGIN_THROTTLE_RATE="1000/min",
        AUTH_FAILURE_RATE="off",
        TASK_EVENT_INTERVAL_S="0.1",
        TASK_CHECKPOINT_INTERVAL_S="3600",
        TRAINING_SSE_POLL_S="0.2",
        TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    workdir = tmp_path_factory.mktemp("client-server")
    with embedded(workdir=workdir, extra_env=extra, login=False) as deployment:
        yield deployment
        for log in sorted(deployment.logs.glob("*.log")):
            text = log.read_bytes()[-3000:].decode(errors="replace")
            print(f"--- {log.name} (tail)\n{text}")


@pytest.fixture
def client(server):
    from orchard_client import Client

    with Client(server.base, username="admin", password=ADMIN_PASSWORD, project="demo") as c:
        yield c


@pytest.fixture
def cli_env(server, tmp_path):
    """Environment of a user's shell for the `orchard` command: its own config dir, the server's
    URL, a PATH where `orchard` is found (a shim over `python -m orchard_client` when the package
    is not installed), one torch-free process per command."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    installed = shutil.which("orchard", path=str(Path(sys.executable).parent))
    shim = bindir / "orchard"
    if installed:
        shim.symlink_to(installed)
    else:
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m orchard_client "$@"\n')
        shim.chmod(0o755)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORCHARD_", "DJANGO_", "DATABASE_", "REDIS_", "BROKER_"))
    }
    env.update(
        PATH=f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        HOME=str(tmp_path),
        PYTHONPATH=os.pathsep.join([str(CLIENT_SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        ORCHARD_PASSWORD=ADMIN_PASSWORD,
        COLUMNS="120",
    )
    return env


@pytest.fixture
def proxy(server):
    from urllib.parse import urlparse

    p = CuttingProxy(urlparse(server.base).port)
    yield p
    p.close()


@pytest.fixture(scope="session")
def digits_files(tmp_path_factory):
    from orchard_client.demo import write_digits

    return write_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def trained(server, tmp_path_factory):
    """A run trained through the client, followed over SSE through a proxy that cuts the stream
    once mid-run; returns the experiment, the run and what the watcher saw."""
    from orchard_client import Client

    client = Client(server.base, username="admin", password=ADMIN_PASSWORD, project="demo")
    datasets = {d["name"]: d["id"] for d in client.datasets.list()}
    exp = client.experiments.create(
        "client-mlp",
        dataset_id=datasets["digits-train"],
        val_dataset_id=datasets["digits-test"],
        architecture="mlp",
        epochs=4,
        batch_size=64,
        devices=["cpu"],
    )
    from urllib.parse import urlparse

    proxy = CuttingProxy(urlparse(server.base).port)
    try:
        proxy.cut_after(1200, response=True)  # headers, the first status, part of an epoch
        watcher = Client(proxy.url, token=client.access_token(), project="demo")
        run = client.runs.start(exp["id"])
        events: list[dict] = []
        final = watcher.runs.wait(run["run_id"], on_event=events.append, timeout=180)
        stats = {"cuts": proxy.cuts, "connections": proxy.connections}
    finally:
        proxy.close()
    return {"client": client, "experiment": exp, "run": final, "events": events, "proxy": stats}
