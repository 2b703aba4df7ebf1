"""Large request bodies through the live daphne (`make run`'s server): a body above
REQUEST_BODY_MEMORY_BYTES (16 MiB) goes through temporary files, one below it stays in memory
(`config.daphne.BodyBuffer`, `apps.core.asgi.ChunksReader`); either way every byte lands where the
client sent it, and a chunk PUT that stops mid-body stores nothing."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import numpy as np
import requests

from apps.datasets.idx import idx_bytes

MIB = 1 << 20


def _project(server, headers) -> str:
    r = requests.get(server.url("/api/projects"), headers=headers, timeout=60)
    return next(p for p in r.json()["data"] if p["name"].lower() == "demo")["id"]


def _open(server, headers, project: str, size: int) -> str:
    r = requests.post(
        server.url(f"/api/projects/{project}/uploads"),
        json={"filename": "f.idx", "size": size},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


def _put(server, headers, project: str, upload: str, position: int, data: bytes) -> dict:
    r = requests.put(
        server.url(f"/api/projects/{project}/uploads/{upload}?position={position}"),
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_large_and_small_chunks_store_every_byte(server):
    token = server.login()
    headers = {"Authorization": f"Bearer {token}"}
    project = _project(server, headers)
    rng = np.random.default_rng(3)
    n = 30_000  # 23.5 MB of pixels: one PUT of 20 MiB (on disk), the rest in memory
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    image_bytes, label_bytes = idx_bytes(images), idx_bytes(labels)
    uploads = {}
    for role, data, cut in (("images", image_bytes, 20 * MIB), ("labels", label_bytes, 1000)):
        upload = _open(server, headers, project, len(data))
        _put(server, headers, project, upload, cut, data[cut:])
        assert _put(server, headers, project, upload, 0, data[:cut])["complete"]
        uploads[role] = upload
    r = requests.post(
        server.url(f"/api/projects/{project}/datasets/from-uploads"),
        json={"name": "large-bodies", "kind": "mnist", "uploads": uploads},
        headers=headers,
        timeout=120,
    )
    assert r.status_code == 201, r.text
    dataset = r.json()["data"]
    assert dataset["num_samples"] == n
    stored = next(server.data_dir.rglob(f"{dataset['id']}/inputs.npy"))
    assert np.array_equal(np.load(stored, mmap_mode="r"), images.reshape(n, -1))
    assert np.array_equal(np.load(stored.with_name("labels.npy")), labels.astype(np.int64))


def test_a_chunk_cut_off_mid_body_stores_nothing(server):
    token = server.login()
    headers = {"Authorization": f"Bearer {token}"}
    project = _project(server, headers)
    size = 4 * MIB
    upload = _open(server, headers, project, size)
    url = urlparse(server.url(f"/api/projects/{project}/uploads/{upload}?position=0"))
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        head = (
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.hostname}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * (size // 2))  # half the body, then the client dies
    # The next request on a fresh connection is served after the cut one was dropped.
    r = requests.get(
        server.url(f"/api/projects/{project}/uploads/{upload}"), headers=headers, timeout=60
    )
    assert r.status_code == 200 and r.json()["data"]["received_bytes"] == 0


def _status_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_large_body_is_never_held_in_the_servers_memory(server):
    """A 192 MiB PUT: Twisted writes it to a temporary file as it arrives, and the view reads that
    file in place (`SpilledBody`). Daphne used to read such a body back into the application's
    queue whole (and Django spooled it to a second file): the server's peak memory grew by the
    body's size. The peak (VmHWM, reset before the PUT) stays within 64 MiB of where it began."""
    pid = server.server.pid
    token = server.login()
    headers = {"Authorization": f"Bearer {token}"}
    project = _project(server, headers)
    size = 192 * MIB
    upload = _open(server, headers, project, size)
    body = np.random.default_rng(5).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # the peak resident size starts again from the current one
    before = _status_kib(pid, "VmRSS")
    assert _put(server, headers, project, upload, 0, body)["complete"]
    grown_mib = (_status_kib(pid, "VmHWM") - before) / 1024
    assert grown_mib < 64, grown_mib
    r = requests.get(
        server.url(f"/api/projects/{project}/uploads/{upload}"), headers=headers, timeout=60
    )
    assert r.json()["data"]["received_bytes"] == size
