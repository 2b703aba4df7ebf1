"""A deployment of Orchard started as the README runs it (prod settings; migrate, collectstatic,
bootstrap, daphne, `orchard_worker` processes) and driven only over HTTP, for the deployed test
suite (`tests/deployed/`) and the `deployed` bench rows. `Deployment.team(...)` starts team mode
on PostgreSQL + Redis (or RabbitMQ) in a database and Redis numbers of its own."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ADMIN_PASSWORD = "deployed-" + secrets.token_hex(8)


def free_port() -> int:
    from bench.harness import port

    return port()


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
class Deployment:
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

    def start_server(self, ready=None) -> None:
        """Start daphne and wait until `ready()` (default: health answers 200)."""
        port = urlparse(self.base).port
        self.server = self._spawn(
            "daphne",
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        )
        wait_until(ready or self.healthy, timeout=120, what="daphne to be ready")

    def answers(self) -> bool:
        """The server answers HTTP at all (health may say 503 for a reason the caller expects)."""
        try:
            requests.get(self.base + "/api/system/health", timeout=2)
            return True
        except requests.RequestException:
            return False

    def start_worker(self, *extra: str) -> subprocess.Popen:
        proc = self._spawn(
            f"worker{len(self.workers)}",
            [sys.executable, "manage.py", "orchard_worker", "--queue", "cpu", *extra],
        )
        self.workers.append(proc)
        return proc

    def wait_workers_ready(self, timeout: float = 180) -> None:
        """Wait until every started worker printed its ready line (it consumes from then on): a
        worker boots for seconds (Django, torch, the warm-up), and a task sent before counted
        that boot as its start latency."""

        def ready() -> bool:
            for index, proc in enumerate(self.workers):
                assert proc.poll() is None, f"worker{index} exited with {proc.returncode}"
                log = (self.logs / f"worker{index}.log").read_text(errors="replace")
                if "orchard worker: queue=" not in log:
                    return False
            return True

        wait_until(ready, timeout=timeout, what="the workers to be ready")

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

    def stop_all(self, procs: list[subprocess.Popen | None], sig=signal.SIGTERM) -> None:
        """`stop` for several processes at once: every one is signalled first, then each is
        waited for, so their graceful shutdowns overlap (a worker's takes seconds)."""
        alive = [proc for proc in procs if proc is not None and proc.poll() is None]
        for proc in alive:
            proc.send_signal(sig)
        deadline = time.monotonic() + 30
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
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


def unreachable(pg_server: str, redis_url: str) -> str | None:
    try:
        import psycopg
        import redis

        psycopg.connect(pg_server + "/postgres", connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        return str(exc)
    return None


def amqp_unreachable(url: str) -> str | None:
    try:
        import pika

        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as exc:
        return f"RabbitMQ: {exc}"
    return None


def _flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def outside_env() -> dict:
    """This process's environment without the settings that pick a deployment's services (the
    caller's own database, Redis, broker and channel layer must not leak into it)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "BROKER_", "CHANNEL_"))
    }


@contextmanager
def embedded(
    *, workdir: Path, extra_env: dict | None = None, cls=None, login: bool = True
) -> Iterator[Deployment]:
    """The embedded mode as `make run` starts it (dev settings, SQLite and the in-process worker
    in the data directory under `workdir`), on a free port; logs' tails printed at the end."""
    env = outside_env()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.dev",
        ORCHARD_DATA_DIR=str(workdir / "data"),
        ORCHARD_ADMIN_PASSWORD=ADMIN_PASSWORD,
        SECRET_KEY=secrets.token_urlsafe(50),
    )
    env.update(extra_env or {})  # may name other settings (a bench site adds its own routes)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    deployment = (cls or Deployment)(
        base=f"http://127.0.0.1:{free_port()}",
        env=env,
        data_dir=workdir / "data",
        logs=workdir / "logs",
    )
    deployment.manage("migrate", "--noinput")
    deployment.manage("bootstrap")
    try:
        deployment.start_server()
        if login:
            deployment.login()
        yield deployment
    finally:
        deployment.stop(deployment.server)
        for log in sorted(deployment.logs.glob("*.log")):
            print(f"--- {log.name} (tail)\n{log.read_bytes()[-3000:].decode(errors='replace')}")


_shared: dict[tuple, tuple[ExitStack, Deployment]] = {}
_templates: set[tuple[str, str]] = set()  # (server, database) migrated copies, see `team`
_cleanup = ExitStack()  # the run's shared temporary directories


@dataclass(frozen=True)
class Reuse:
    """What a run's team deployments share (`team(reuse=...)`): a copy of the first one's
    database as migrate left it, and one STATIC_ROOT collected once."""

    template_db: str
    static_root: Path


def shared_team_setup() -> Reuse:
    """The `Reuse` of this bench run (dropped and removed by `close_shared`)."""
    from bench.harness import db_name

    global _reuse
    if _reuse is None:
        static = _cleanup.enter_context(tempfile.TemporaryDirectory(prefix="orchard-bench-"))
        _reuse = Reuse(db_name(f"migrated_{os.getpid()}"), Path(static))
    return _reuse


_reuse: Reuse | None = None


def shared_embedded(extra_env: dict | None = None) -> Deployment:
    """One embedded-mode site (`embedded`, in a temporary directory) for every bench row of this
    run that asks for one with the same `extra_env`: started by the first, stopped by
    `close_shared` at the end of the run, so a run pays one migrate + bootstrap + server start
    (about 30 s on a small host) instead of one per row. The rows only add their own clusters,
    datasets and tasks to it; a site whose server died is started afresh."""
    key = tuple(sorted((extra_env or {}).items()))
    if key in _shared and _shared[key][1].server.poll() is not None:
        _shared.pop(key)[0].close()
    if key not in _shared:
        stack = ExitStack()
        try:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="orchard-bench-"))
            deployment = stack.enter_context(embedded(workdir=Path(workdir), extra_env=extra_env))
        except BaseException:
            stack.close()
            raise
        _shared[key] = (stack, deployment)
    return _shared[key][1]


def close_shared() -> None:
    """Stop the sites `shared_embedded` started, drop the migrated copies `team` made and remove
    the shared static files."""
    global _reuse
    while _shared:
        _shared.popitem()[1][0].close()
    while _templates:
        server, name = _templates.pop()
        try:
            import psycopg

            with psycopg.connect(server + "/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # the server went away: nothing left to drop there
            print(f"    (could not drop {name}: {exc!s:.200})")
    _cleanup.close()
    _reuse = None


@contextmanager
def team(
    *,
    workdir: Path,
    pg_server: str = "postgres://postgres@127.0.0.1:5432",
    redis_server: str = "redis://127.0.0.1:6379",
    first_redis_db: int = 12,
    broker: str = "redis",
    amqp_url: str = AMQP_URL,
    db_name: str | None = None,
    workers: int = 2,
    worker_args: tuple[str, ...] = ("--reap-every", "0.5"),
    extra_env: dict | None = None,
    reuse: Reuse | None = None,
) -> Iterator[Deployment]:
    """Team mode as the README's team section runs it, on its own database (created, dropped at
    the end) and Redis numbers `first_redis_db` (cache/channel layer) and +1 (broker; flushed).
    With `reuse` (the bench's `shared_team_setup()`), a later deployment of the same run copies
    the first one's freshly migrated database and collected static files instead of running
    `migrate` and `collectstatic` again."""
    import psycopg

    pg_server, redis_server = pg_server.rstrip("/"), redis_server.rstrip("/")
    db_name = db_name or f"orchard_deployed_{os.getpid()}"
    cloned = False
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if reuse is not None and (pg_server, reuse.template_db) in _templates:
            conn.execute(f'CREATE DATABASE "{db_name}" TEMPLATE "{reuse.template_db}"')
            cloned = True
        else:
            conn.execute(f'CREATE DATABASE "{db_name}"')
    redis_urls = [f"{redis_server}/{first_redis_db}", f"{redis_server}/{first_redis_db + 1}"]
    for url in redis_urls:
        _flush_redis(url)
    data_dir, logs = workdir / "data", workdir / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = outside_env()
    env.update(
        # The README's team section, as written there.
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"{pg_server}/{db_name}",
        REDIS_URL=redis_urls[0],
        BROKER_URL=amqp_url if broker == "amqp" else redis_urls[1],
        # Plain HTTP on loopback (a TLS proxy stands in front in a real deployment).
        SECURE_SSL_REDIRECT="false",
        ORCHARD_DATA_DIR=str(data_dir),
        ORCHARD_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra_env or {})  # may name other settings (a bench site adds its own routes)
    if reuse is not None:
        env["STATIC_ROOT"] = str(reuse.static_root)
    deployment = Deployment(
        base=f"http://127.0.0.1:{free_port()}", env=env, data_dir=data_dir, logs=logs
    )
    try:
        if not cloned:
            deployment.manage("migrate", "--noinput")
            if reuse is not None:  # copied by the run's later deployments (no connection now)
                with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{reuse.template_db}" WITH (FORCE)')
                    conn.execute(f'CREATE DATABASE "{reuse.template_db}" TEMPLATE "{db_name}"')
                _templates.add((pg_server, reuse.template_db))
        if reuse is None or not (reuse.static_root / "staticfiles.json").exists():
            deployment.manage("collectstatic", "--noinput", "--verbosity", "0")
        deployment.manage("bootstrap")
        for _ in range(workers):  # they boot (Django, torch, warm-up) while daphne starts
            deployment.start_worker(*worker_args)
        deployment.start_server()
        deployment.wait_workers_ready()
        deployment.login()
        yield deployment
    finally:
        deployment.stop_all([deployment.server, *deployment.workers])
        for url in redis_urls:
            _flush_redis(url)
        with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
