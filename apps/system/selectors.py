"""Reads about the platform itself: health of its services, devices, disk usage."""

import asyncio
import os
import shutil
import time
import uuid
from pathlib import Path

import dramatiq
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
        result = {"ok": True}
        if detail:
            result["detail"] = detail
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_broker():
    broker = dramatiq.get_broker()
    name = type(broker).__name__
    if hasattr(broker, "client"):  # RedisBroker
        broker.client.ping()
    elif name == "RabbitmqBroker":
        broker.connection  # noqa: B018 - opens (or reuses) the AMQP connection
    return name


CHANNEL_LAYER_TIMEOUT_S = 5.0  # a round trip past this is a failed check (503), not a hang


def _check_channel_layer():
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def roundtrip():
        # The layer's own prefix: channels_redis reads every process-local channel of that
        # prefix through one receive loop, which an open socket's consumer holds while it waits;
        # a channel of another prefix ("health.") waited behind it for as long as any socket
        # stayed idle, and the health check never answered in team mode.
        channel = await layer.new_channel()
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "health.ping", "token": token})
        message = await asyncio.wait_for(layer.receive(channel), CHANNEL_LAYER_TIMEOUT_S)
        if message.get("token") != token:
            raise RuntimeError("channel layer returned a different message")

    async_to_sync(roundtrip)()
    return type(layer).__name__


def _check_disk():
    """The data directory can take writes: at least HEALTH_MIN_FREE_BYTES free (uploads, datasets
    and checkpoints would fail half-way on a full disk)."""
    from apps.core.conf import setting

    minimum = int(setting("HEALTH_MIN_FREE_BYTES"))
    free = shutil.disk_usage(settings.DATA_DIR).free
    if free < minimum:
        raise OSError(f"{free} bytes free in the data directory, below HEALTH_MIN_FREE_BYTES")
    return f"{free // (1024 * 1024)} MiB free"


def health() -> dict:
    """Check the database, the broker, the channel layer and the data disk; `ok` only if all are."""
    checks = {
        "database": _timed(_check_database),
        "broker": _timed(_check_broker),
        "channel_layer": _timed(_check_channel_layer),
        "disk": _timed(_check_disk),
    }
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def devices() -> dict:
    """The CPU and every GPU (NVML), in the studio's devices shape."""
    from ml.devices import list_devices

    return list_devices()


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def workspace(*, project_ids: list[str] | None = None) -> dict:
    """Disk usage of the data directory's filesystem, of Orchard's data, and per visible project."""
    data_dir = Path(settings.DATA_DIR)
    data_dir.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(data_dir)
    projects_root = Path(settings.MEDIA_ROOT) / "projects"
    per_project = {}
    for project_id in project_ids or []:
        path = projects_root / project_id
        per_project[project_id] = _dir_size(path) if path.is_dir() else 0
    return {
        "data_dir": str(data_dir),
        "disk_total_bytes": usage.total,
        "disk_used_bytes": usage.used,
        "disk_free_bytes": usage.free,
        "data_bytes": _dir_size(data_dir),
        "projects": per_project,
    }
