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

import pytest

from bench.deployment import (
    ADMIN_PASSWORD,
    AMQP_URL,
    amqp_unreachable,
    free_port,
    unreachable,
    wait_until,
)
from bench.deployment import Deployment as Team
from bench.deployment import team as deployment_team

pytestmark = [pytest.mark.services, pytest.mark.slow]

__all__ = ["ADMIN_PASSWORD", "Team", "free_port", "wait_until"]


@pytest.fixture(scope="module")
def team(request, tmp_path_factory):
    pg_server = os.environ.get("DEPLOYED_PG_URL", "postgres://postgres@127.0.0.1:5432")
    redis_server = os.environ.get("DEPLOYED_REDIS_URL", "redis://127.0.0.1:6379")
    amqp_url = os.environ.get("DEPLOYED_AMQP_URL", AMQP_URL)
    # A test module picks its broker with BROKER = "amqp" (RabbitMQ); the default is Redis.
    broker = getattr(request.module, "BROKER", os.environ.get("DEPLOYED_BROKER", "redis"))
    why = unreachable(pg_server.rstrip("/"), redis_server.rstrip("/"))
    if not why and broker == "amqp":
        why = amqp_unreachable(amqp_url)
    if why:
        pytest.skip(f"team mode needs PostgreSQL and Redis on loopback: {why}")
    workdir = tmp_path_factory.mktemp("team")
    try:
        with deployment_team(
            workdir=workdir,
            pg_server=pg_server,
            redis_server=redis_server,
            first_redis_db=int(os.environ.get("DEPLOYED_REDIS_DB", "12")),
            broker=broker,
            amqp_url=amqp_url,
            extra_env={
                # Short engine intervals so the fault tests wait seconds, not minutes.
                "TASK_HEARTBEAT_INTERVAL_S": "0.2",
                "TASK_HEARTBEAT_STALE_S": "3",
                "TASK_CHECKPOINT_INTERVAL_S": "0",
                "TASK_QUEUED_RESEND_S": "3",
                "LOGIN_THROTTLE_RATE": "1000/min",
            },
        ) as deployment:
            yield deployment
    finally:
        for log in sorted((workdir / "logs").glob("*.log")):
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            print(f"--- {log.name} (tail)\n{tail}")
