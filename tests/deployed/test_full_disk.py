"""Team mode with its data directory on a small tmpfs that fills up: every write that does not
fit answers 507 with nothing half-written, the processes live on (an MNIST import used to kill the
server with SIGBUS and leave its staging directory behind), health reports the disk, logins keep
working, also across a restart, and freeing space brings everything back.

Needs root (or CAP_SYS_ADMIN) to mount the tmpfs; skipped where the machine does not allow it."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess

import numpy as np
import pytest
import requests

from apps.datasets.idx import idx_bytes
from bench.deployment import team as deployment_team
from bench.deployment import unreachable
from tests.deployed.test_team_mode import demo

pytestmark = [pytest.mark.services, pytest.mark.slow]

DISK_MIB = 32
MIN_FREE = 4 * 1024 * 1024
CHUNK = 2 * 1024 * 1024


def _mount_tmpfs(path) -> str | None:
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return "no mount command"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


@pytest.fixture(scope="module")
def full_team(tmp_path_factory):
    pg_server = os.environ.get("DEPLOYED_PG_URL", "postgres://postgres@127.0.0.1:5432")
    redis_server = os.environ.get("DEPLOYED_REDIS_URL", "redis://127.0.0.1:6379")
    why = unreachable(pg_server.rstrip("/"), redis_server.rstrip("/"))
    if why:
        pytest.skip(f"team mode needs PostgreSQL and Redis on loopback: {why}")
    workdir = tmp_path_factory.mktemp("team-disk")
    why = _mount_tmpfs(workdir / "data")
    if why:
        pytest.skip(f"cannot mount a {DISK_MIB} MiB tmpfs here: {why}")
    try:
        with deployment_team(
            workdir=workdir,
            pg_server=pg_server,
            redis_server=redis_server,
            first_redis_db=int(os.environ.get("DEPLOYED_REDIS_DB", "12")) + 2,
            workers=1,
            db_name=f"orchard_deployed_disk_{os.getpid()}",
            extra_env={
                "STATIC_ROOT": str(workdir / "static"),  # only the data directory is small
                "HEALTH_MIN_FREE_BYTES": str(MIN_FREE),
                "LOGIN_THROTTLE_RATE": "1000/min",
            },
        ) as deployment:
            yield deployment
    finally:
        subprocess.run(["umount", "-l", str(workdir / "data")], check=False)
        for log in sorted((workdir / "logs").glob("*.log")):
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            print(f"--- {log.name} (tail)\n{tail}")


def _upload(team, project, name, payload) -> str:
    r = team.post(f"/api/projects/{project}/uploads", {"filename": name, "size": len(payload)})
    upload = team.ok(r, 201)["id"]
    for position in range(0, len(payload), CHUNK):
        r = _put(team, project, upload, position, payload[position : position + CHUNK])
        team.ok(r)
    return upload


def _put(team, project, upload, position, data):
    return requests.put(
        team.url(f"/api/projects/{project}/uploads/{upload}?position={position}"),
        data=data,
        headers={**team.headers(), "Content-Type": "application/octet-stream"},
        timeout=60,
    )


def _free(team) -> int:
    return shutil.disk_usage(team.data_dir).free


def _staging_files(team) -> list[str]:
    return [str(p) for p in team.data_dir.rglob("*") if "staging" in p.parts or ".tmp" in p.name]


def _health(team) -> tuple[int, dict]:
    r = requests.get(team.url("/api/system/health"), timeout=30)
    return r.status_code, r.json()


def test_an_import_that_does_not_fit_is_507_and_leaves_nothing_behind(full_team):
    team = full_team
    project, _ = demo(team)
    rng = np.random.default_rng(0)
    # A few MB of gzip uploads that fit; the 37.6 MB of uint8 pixels they hold cannot (datasets
    # store the pixels as uploaded, no longer a float32 copy 4x the size of the idx file).
    images = ((rng.random((48_000, 28, 28)) < 0.05) * 255).astype(np.uint8)
    labels = rng.integers(0, 10, size=48_000, dtype=np.uint8)
    uploads = {
        "images": _upload(team, project, "images.idx.gz", gzip.compress(idx_bytes(images), 1)),
        "labels": _upload(team, project, "labels.idx", idx_bytes(labels)),
    }
    free_before = _free(team)

    r = team.post(
        f"/api/projects/{project}/datasets/from-uploads",
        {"name": "too-big", "kind": "mnist", "uploads": uploads},
    )
    assert r.status_code == 507, r.text[:500]
    assert r.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
    assert team.server.poll() is None, "the server died writing to a full disk"
    # This route makes the dataset in one call: a failure leaves no dataset, the uploads stay.
    datasets = team.ok(team.get(f"/api/projects/{project}/datasets"))["items"]
    assert "too-big" not in {d["name"] for d in datasets}
    for upload in uploads.values():
        assert team.ok(team.get(f"/api/projects/{project}/uploads/{upload}"))["complete"] is True
    assert _staging_files(team) == []
    assert _free(team) >= free_before - 64 * 1024  # nothing of the import stayed on disk
    assert _health(team)[0] == 200

    # The uploads are kept: once there is room the same call succeeds (a smaller pair here).
    for upload in uploads.values():
        assert requests.delete(
            team.url(f"/api/projects/{project}/uploads/{upload}"), headers=team.headers()
        ).status_code in (200, 204)
    small = {
        "images": _upload(team, project, "images.idx", idx_bytes(images[:2000])),
        "labels": _upload(team, project, "labels.idx", idx_bytes(labels[:2000])),
    }
    r = team.post(
        f"/api/projects/{project}/datasets/from-uploads",
        {"name": "too-big", "kind": "mnist", "uploads": small},
    )
    assert team.ok(r, 201)["num_samples"] == 2000


def test_chunks_past_the_free_space_are_507_whole_and_health_says_so(full_team):
    team = full_team
    project, _ = demo(team)
    size = DISK_MIB * 1024 * 1024
    r = team.post(f"/api/projects/{project}/uploads", {"filename": "huge.bin", "size": size})
    upload = team.ok(r, 201)["id"]
    payload = os.urandom(CHUNK)
    position = 0
    while True:
        r = _put(team, project, upload, position, payload)
        if r.status_code != 200:
            break
        position += CHUNK
        assert position < size, "a disk of DISK_MIB took the whole upload"
    assert r.status_code == 507, r.text[:500]
    assert r.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
    progress = team.ok(team.get(f"/api/projects/{project}/uploads/{upload}"))
    assert progress["received_bytes"] == position  # the chunk that did not fit left nothing

    status, body = _health(team)
    assert status == 503 and body["error"]["details"]["checks"]["disk"]["ok"] is False, body

    # Logins keep working on a full disk, also after a restart of the server.
    team.login()
    team.stop(team.server)
    team.start_server(ready=team.answers)
    team.login()
    assert team.ok(team.get(f"/api/projects/{project}/uploads/{upload}"))["received_bytes"] == (
        position
    )

    r = requests.delete(
        team.url(f"/api/projects/{project}/uploads/{upload}"), headers=team.headers()
    )
    assert r.status_code in (200, 204)
    assert _health(team)[0] == 200
