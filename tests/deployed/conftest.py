"""Team mode as deployed: the README's processes, started for real and driven only over HTTP and
websockets, as a team's clients would.

`team` starts what the README's team section runs (migrate, collectstatic, bootstrap, daphne and
two `orchard_worker --queue cpu` processes) against PostgreSQL and Redis on loopback, in a database
and Redis numbers of its own, on a free port. Skipped where PostgreSQL or Redis is unreachable.

Settable (so the suite runs beside other work): DEPLOYED_PG_URL (server, default
postgres://postgres@127.0.0.1:5432), DEPLOYED_REDIS_URL (default redis://127.0.0.1:6379),
DEPLOYED_REDIS_DB (first of the two Redis numbers it uses, default 12), DEPLOYED_BROKER
(`redis` or `amqp`, default redis; a module's BROKER overrides it), DEPLOYED_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ADMIN_PASSWORD = "deployed-" + secrets.token_hex(8)

pytestmark = [pytest.mark.services, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns a truthy value (bounded); the last value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Team:
    """The running processes of one team-mode deployment and an authenticated HTTP session."""

    base: str
    env: dict
    data_dir: Path
    logs: Path
    server: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    token: str = ""

    # -- processes ------------------------------------------------------------------------------
    def manage(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        return out.stdout

    def _spawn(self, name: str, argv: list[str], extra_env: dict | None = None):
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_server(self) -> None:
        port = urlparse(self.base).port
        self.server = self._spawn(
            "daphne",
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        )
        wait_until(self.healthy, timeout=120, what="daphne to answer /api/system/health")

    def start_worker(self, *extra: str) -> subprocess.Popen:
        proc = self._spawn(
            f"worker{len(self.workers)}",
            [sys.executable, "manage.py", "orchard_worker", "--queue", "cpu", *extra],
        )
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[subprocess.Popen]:
        return [p for p in self.workers if p.poll() is None]

    def healthy(self) -> bool:
        try:
            return requests.get(self.base + "/api/system/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, proc: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- HTTP -----------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw):
        return requests.get(self.url(path), headers=self.headers(), timeout=60, **kw)

    def post(self, path: str, json=None, **kw):
        return requests.post(self.url(path), json=json, headers=self.headers(), timeout=60, **kw)

    def ok(self, response, status: int = 200):
        assert response.status_code == status, (response.status_code, response.text[:2000])
        return response.json()["data"] if response.content else None

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        r = requests.post(
            self.url("/api/auth/token"),
            json={"username": username, "password": password},
            timeout=30,
        )
        self.token = self.ok(r)["access"]
        return self.token

    def ws_url(self, path: str) -> str:
        return self.base.replace("http://", "ws://") + path + f"?token={self.token}"


def _reachable(pg_server: str, redis_url: str) -> str | None:
    try:
        import psycopg
        import redis

        psycopg.connect(pg_server + "/postgres", connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        return str(exc)
    return None


def _amqp_unreachable(url: str) -> str | None:
    try:
        import pika

        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as exc:
        return f"RabbitMQ: {exc}"
    return None


def _flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="module")
def team(request, tmp_path_factory):
    pg_server = os.environ.get("DEPLOYED_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
    redis_server = os.environ.get("DEPLOYED_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    first_db = int(os.environ.get("DEPLOYED_REDIS_DB", "12"))
    why = _reachable(pg_server, redis_server)
    if not why and getattr(request.module, "BROKER", "") == "amqp":
        why = _amqp_unreachable(os.environ.get("DEPLOYED_AMQP_URL", AMQP_URL))
    if why:
        pytest.skip(f"team mode needs PostgreSQL and Redis on loopback: {why}")
    import psycopg

    db_name = f"orchard_deployed_{os.getpid()}"
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        conn.execute(f'CREATE DATABASE "{db_name}"')
    redis_url = f"{redis_server}/{first_db}"
    # A test module picks its broker with BROKER = "amqp" (RabbitMQ); the default is Redis.
    broker_kind = getattr(request.module, "BROKER", os.environ.get("DEPLOYED_BROKER", "redis"))
    broker_url = (
        os.environ.get("DEPLOYED_AMQP_URL", AMQP_URL)
        if broker_kind == "amqp"
        else f"{redis_server}/{first_db + 1}"
    )
    for url in (redis_url, f"{redis_server}/{first_db + 1}"):
        _flush_redis(url)
    data_dir = tmp_path_factory.mktemp("team-data")
    logs = tmp_path_factory.mktemp("team-logs")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "BROKER_", "CHANNEL_"))
    }
    env.update(
        # The README's team section, as written there.
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"{pg_server}/{db_name}",
        REDIS_URL=redis_url,
        BROKER_URL=broker_url,
        # Plain HTTP on loopback (a TLS proxy stands in front in a real deployment).
        SECURE_SSL_REDIRECT="false",
        ORCHARD_DATA_DIR=str(data_dir),
        ORCHARD_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # Short engine intervals so the fault tests wait seconds, not minutes.
        TASK_HEARTBEAT_INTERVAL_S="0.2",
        TASK_HEARTBEAT_STALE_S="3",
        TASK_CHECKPOINT_INTERVAL_S="0",
        TASK_QUEUED_RESEND_S="3",
        LOGIN_THROTTLE_RATE="1000/min",
        PYTHONPATH=str(ROOT),
    )
    port = free_port()
    deployment = Team(base=f"http://127.0.0.1:{port}", env=env, data_dir=data_dir, logs=logs)
    deployment.manage("migrate", "--noinput")
    deployment.manage("collectstatic", "--noinput", "--verbosity", "0")
    deployment.manage("bootstrap")
    try:
        deployment.start_server()
        for _ in range(2):
            deployment.start_worker("--reap-every", "0.5")
        deployment.login()
        yield deployment
    finally:
        for proc in [deployment.server, *deployment.workers]:
            deployment.stop(proc)
        for log in sorted(logs.glob("*.log")):
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            print(f"--- {log.name} (tail)\n{tail}")
        for url in (redis_url, f"{redis_server}/{first_db + 1}"):
            _flush_redis(url)
        with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
