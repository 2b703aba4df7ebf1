"""Direct io on loopback: a real server (daphne, embedded mode) and a real websocket client.

Rows:
- directio.roundtrip: p50 / p99 of one REQUEST message's round trip on the Hanami socket minus
  the bare forward pass of the same network in this process (batch 1). Goals: p50 overhead
  <= 1.5 ms, p99 round trip < 10 ms.
- directio.throughput: request messages per second on one connection (send, wait, repeat).
  Goal >= 1,000/s.
- directio.io_binary / io_json: the same on the main-API io socket (one message in flight at a
  time: the SDK's `request` waits for each answer). Wall-clock rates are noisy on a shared host,
  so these rows also carry the server process's CPU per message (utime + stime from /proc, 10 ms
  ticks: coarse with --quick) and the client's, in `extra` and the notes.
- directio.vs_request_task: a one-sample request task (create -> finished, polled) / one direct
  io round trip (p50). Direct io should be far faster.

The server runs `config.settings.dev` against a temporary SQLite file with the in-process worker,
as `make run` does; the cluster is the seed's 784-400-10 template.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from bench.harness import Context, Row, row, skipped

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-123"


def _free_port() -> int:
    from bench.harness import port

    return port()


class Server:
    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="orchard-bench-io-")
        self.port = _free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.dev",
            "DEBUG": "false",
            "ORCHARD_DATA_DIR": self.tmp,
            "DATABASE_URL": f"sqlite:///{self.tmp}/bench.sqlite3",
            "BROKER_URL": "memory",
            "CHANNEL_LAYER": "memory",
            "REDIS_URL": "",
            "ORCHARD_ADMIN_PASSWORD": PASSWORD,
            "ORCHARD_DEMO_HOOKS": "",
            "LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        manage = [sys.executable, str(ROOT / "manage.py")]
        for args in (["migrate", "-v", "0"], ["bootstrap"]):
            subprocess.run(manage + args, env=self.env, cwd=ROOT, check=True, capture_output=True)
        daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*daphne, "config.asgi:application"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url("/api/system/health"), timeout=1).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def call(self, method: str, path: str, body=None, token: str | None = None, **query):
        return hanami_call(self.base, method, path, body, token, **query)


def hanami_call(base: str, method: str, path: str, body=None, token: str | None = None, **query):
    """A Hanami SDK request: JSON body without a Content-Type, raw X-Auth-Token."""
    from urllib.parse import urlencode

    url = base + "/control/v1/" + path + (("?" + urlencode(query)) if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


async def _ws_open(port: int, token: str, target: str, uuid: str):
    import websockets

    ws = await websockets.connect(f"ws://127.0.0.1:{port}", max_size=None)
    await ws.send(json.dumps({"token": token, "target": target, "uuid": uuid}))
    answer = json.loads(await ws.recv())
    if not answer.get("success"):
        raise RuntimeError(answer)
    return ws


def _request_message(values: np.ndarray) -> bytes:
    from apps.hanami.proto.messages import REQUEST_TYPE, ClusterIO_Message

    message = ClusterIO_Message(
        brickName="test_input", isLast=True, processType=REQUEST_TYPE, numberOfValues=values.size
    )
    message.values.extend(values.tolist())
    return message.SerializeToString()


async def _roundtrips(port: int, token: str, cluster: str, n: int) -> list[float]:
    frame = _request_message(np.random.default_rng(0).random(784, dtype=np.float32))
    ws = await _ws_open(port, token, "cluster", cluster)
    try:
        for _ in range(min(50, n)):  # warm-up
            await ws.send(frame)
            await ws.recv()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await ws.send(frame)
            await ws.recv()
            times.append(time.perf_counter() - start)
        return times
    finally:
        await ws.close()


async def _upload(port: int, token: str, file_uuid: str, payload: bytes) -> None:
    from apps.hanami.proto.messages import FileUpload_Message, FileUploadResponse_Message

    ws = await _ws_open(port, token, "file_upload", file_uuid)
    try:
        chunk = 128 * 1024
        for position in range(0, len(payload), chunk):
            message = FileUpload_Message(
                position=position, data=payload[position : position + chunk]
            )
            await ws.send(message.SerializeToString())
            if not FileUploadResponse_Message.FromString(await ws.recv()).success:
                raise RuntimeError("upload failed")
    finally:
        await ws.close()


def upload_mnist(base: str, token: str, name: str, images: np.ndarray, labels: np.ndarray) -> str:
    """`dataset.upload_mnist_files` of the SDK: create, both idx files over the upload socket,
    finalize; the dataset's uuid."""
    from apps.datasets.idx import idx_bytes

    port = int(base.rsplit(":", 1)[1])
    images_raw, labels_raw = idx_bytes(images), idx_bytes(labels)
    created = hanami_call(
        base,
        "POST",
        "mnist/dataset",
        {"name": name, "input_data_size": len(images_raw), "label_data_size": len(labels_raw)},
        token,
    )
    asyncio.run(_upload(port, token, created["uuid_input_file"], images_raw))
    asyncio.run(_upload(port, token, created["uuid_label_file"], labels_raw))
    body = {k: created[k] for k in ("uuid", "uuid_input_file", "uuid_label_file")}
    hanami_call(base, "PUT", "mnist/dataset", body, token)
    return created["uuid"]


def _one_sample_dataset(server: Server, token: str) -> str:
    images = (np.random.default_rng(1).random((1, 28, 28)) * 255).astype(np.uint8)
    return upload_mnist(server.base, token, "one", images, np.array([3], dtype=np.uint8))


def run_task(
    base: str, token: str, kind: str, cluster: str, dataset: str, poll: float = 0.002
) -> tuple[str, float]:
    """A Hanami task (`train` or `request`) from POST to `finished`, polled as the SDK polls;
    (its uuid, the seconds it took as the client saw them)."""
    body = {"name": "bench", "type": kind, "cluster_uuid": cluster, "dataset_uuid": dataset}
    start = time.perf_counter()
    task = hanami_call(base, "POST", "task", body, token)
    while True:
        state = hanami_call(
            base, "GET", "task", None, token, uuid=task["uuid"], cluster_uuid=cluster
        )
        if state["state"] == "finished":
            return task["uuid"], time.perf_counter() - start
        if state["state"] == "aborted":
            raise RuntimeError(f"{kind} task failed: {state}")
        time.sleep(poll)


def _request_task_seconds(server: Server, token: str, cluster: str, dataset: str) -> float:
    return run_task(server.base, token, "request", cluster, dataset)[1]


def forward_seconds(n: int, threads: int | None = None) -> list[float]:
    """Seconds of each of `n` bare batch-1 forward passes of the 784-400-10 network in this
    process, on `threads` torch threads (default: as many as this process has)."""
    import torch

    from ml.networks import build_network
    from ml.templates import MNIST_784_400_10, parse_template

    model = build_network(parse_template(MNIST_784_400_10), seed=0).eval()
    x = torch.rand(1, 784)
    times = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        with torch.inference_mode():
            for _ in range(min(50, n)):
                torch.softmax(model(x), dim=1).numpy()
            for _ in range(n):
                start = time.perf_counter()
                torch.softmax(model(x), dim=1).numpy()
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return times


def _api(base: str, method: str, path: str, body=None, token: str | None = None):
    """A main-API request (JSON, Bearer); the envelope's data."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) process `pid` has used so far; None where /proc can't tell."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def _io_rates(
    port: int, jwt: str, project: str, cluster: str, n: int, server_pid: int | None = None
) -> dict[str, float]:
    """Messages per second on one main-API io socket, binary frames then JSON frames; with
    `server_pid`, also the server's and this client's CPU microseconds per message
    (`<kind>_server_us`, `<kind>_client_us`)."""
    import websockets

    url = f"ws://127.0.0.1:{port}/ws/projects/{project}/clusters/{cluster}/io?token={jwt}"
    x = np.random.default_rng(0).random(784, dtype=np.float32)
    binary = b"R" + x.astype("<f4").tobytes()
    rates = {}
    async with websockets.connect(url, max_size=None) as ws:
        ready = json.loads(await ws.recv())
        brick = next(iter(ready["inputs"]))
        text = json.dumps({"type": "request", "inputs": {brick: x.tolist()}})
        for name, frame in (("binary", binary), ("json", text)):
            for _ in range(min(50, n)):  # warm-up
                await ws.send(frame)
                await ws.recv()
            server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
            start = time.perf_counter()
            for _ in range(n):
                await ws.send(frame)
                await ws.recv()
            rates[name] = n / (time.perf_counter() - start)
            server_after = cpu_seconds(server_pid)
            if server_cpu is not None and server_after is not None:
                rates[f"{name}_server_us"] = (server_after - server_cpu) / n * 1e6
                rates[f"{name}_client_us"] = (time.process_time() - client_cpu) / n * 1e6

    async def one(sockets_n: int) -> None:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.recv()  # ready
            for _ in range(n // sockets_n):
                await ws.send(binary)
                await ws.recv()

    for sockets_n in (4,):  # the same number of messages spread over several sockets at once
        start = time.perf_counter()
        await asyncio.gather(*(one(sockets_n) for _ in range(sockets_n)))
        rates[f"binary_x{sockets_n}"] = (n // sockets_n) * sockets_n / (time.perf_counter() - start)
    return rates


def _cpu_extra(io: dict[str, float], kind: str) -> dict[str, float]:
    keys = {"server_cpu_us": f"{kind}_server_us", "client_cpu_us": f"{kind}_client_us"}
    return {name: io[key] for name, key in keys.items() if key in io}


def _cpu_note(io: dict[str, float], kind: str) -> str:
    extra = _cpu_extra(io, kind)
    if not extra:
        return ""
    return (
        f"; CPU per message: server {extra['server_cpu_us']:.0f} us, "
        f"client {extra['client_cpu_us']:.0f} us"
    )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _cluster_in(base: str, jwt: str, project: str, cluster: str) -> bool:
    try:
        _api(base, "GET", f"/api/projects/{project}/clusters/{cluster}", token=jwt)
        return True
    except urllib.error.HTTPError:
        return False


def direct_cluster(base: str, password: str) -> tuple[str, str]:
    """(Hanami token, cluster uuid): admin's token and a new 784-400-10 cluster in its project,
    through the Hanami API as the SDK sends it."""
    from ml.templates import MNIST_784_400_10

    token = hanami_call(base, "POST", "token", {"id": "admin", "password": password})["token"]
    template = base64.b64encode(MNIST_784_400_10.encode()).decode()
    cluster = hanami_call(base, "POST", "cluster", {"name": "io", "template": template}, token)
    return token, cluster["uuid"]


def socket_figures(
    base: str, token: str, cluster: str, password: str, n: int, server_pid: int | None = None
):
    """Round-trip seconds on the Hanami socket (`n` sequential REQUEST messages) and the main-API
    io socket's rates (`_io_rates`) for `cluster`, switched to DIRECT mode first."""
    port = int(base.rsplit(":", 1)[1])
    hanami_call(base, "PUT", "cluster/set_mode", {"new_state": "DIRECT", "uuid": cluster}, token)
    trips = asyncio.run(_roundtrips(port, token, cluster, n))
    jwt = _api(base, "POST", "/api/auth/token", {"username": "admin", "password": password})
    projects = _api(base, "GET", "/api/projects", token=jwt["access"])
    project = next(p["id"] for p in projects if _cluster_in(base, jwt["access"], p["id"], cluster))
    io = asyncio.run(_io_rates(port, jwt["access"], project, cluster, n, server_pid))
    return trips, io


@row("directio")
def directio(ctx: Context) -> list[Row]:
    try:
        import websockets  # noqa: F401
    except ImportError:
        return [skipped("directio.roundtrip", "overhead p50", "the websockets package is missing")]
    n = 200 if ctx.quick else 3000
    with Server() as server:
        token, cluster_uuid = direct_cluster(server.base, PASSWORD)
        dataset = _one_sample_dataset(server, token)
        _request_task_seconds(server, token, cluster_uuid, dataset)  # warm-up (imports, caches)
        task_times = [
            _request_task_seconds(server, token, cluster_uuid, dataset)
            for _ in range(1 if ctx.quick else 5)
        ]
        pid = server.proc.pid if server.proc is not None else None
        trips, io = socket_figures(server.base, token, cluster_uuid, PASSWORD, n, pid)
    forward = forward_seconds(n)

    ms = 1000.0
    p50, p99 = _pct(trips, 50) * ms, _pct(trips, 99) * ms
    f50, f99 = _pct(forward, 50) * ms, _pct(forward, 99) * ms
    per_second = len(trips) / sum(trips)
    task_s = statistics.median(task_times)
    notes = f"{n} sequential REQUEST messages, 784-400-10, daphne on loopback"
    bare = 1.0 / statistics.mean(forward)
    io_rows = [
        Row(
            f"directio.io_{kind}",
            f"main-API io socket, {kind} frames, msg/s / bare forwards/s",
            io[kind],
            bare,
            "msg/s",
            goal=">= 2000 msg/s" if kind == "binary" else ">= 1000 msg/s",
            notes=f"{n} sequential one-sample requests on ws/projects/.../io, daphne on loopback"
            + _cpu_note(io, kind),
            extra=_cpu_extra(io, kind),
        )
        for kind in ("binary", "json")
    ]
    io_rows.append(
        Row(
            "directio.io_binary_x4",
            "4 io sockets at once, binary frames, total msg/s / one socket's",
            io["binary_x4"],
            io["binary"],
            "msg/s",
            goal="scales with sockets",
            notes="the same one-sample requests spread over 4 concurrent connections",
        )
    )
    return io_rows + [
        Row(
            "directio.roundtrip_p50",
            "round trip / bare forward (p50)",
            p50,
            f50,
            "ms",
            goal="overhead <= 1.5 ms",
            notes=f"overhead {p50 - f50:.3f} ms; {notes}",
            extra={"overhead_ms": p50 - f50},
        ),
        Row(
            "directio.roundtrip_p99",
            "round trip / bare forward (p99)",
            p99,
            f99,
            "ms",
            goal="round trip < 10 ms",
            notes=f"overhead {p99 - f99:.3f} ms",
            extra={"overhead_ms": p99 - f99},
        ),
        Row(
            "directio.throughput",
            "messages/s on one connection / bare forwards/s",
            per_second,
            1.0 / statistics.mean(forward),
            "msg/s",
            goal=">= 1000 msg/s",
        ),
        Row(
            "directio.vs_request_task",
            "one-sample request task / direct io round trip (p50)",
            task_s * ms,
            p50,
            "ms",
            goal="direct io far faster",
            notes="task: POST task -> GET task finished (in-process worker, 2 ms polls)",
        ),
    ]
