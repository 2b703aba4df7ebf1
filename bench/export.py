"""Exports: how closely an ONNX export reproduces the torch model, and how fast onnxruntime runs it
compared with torch eager at batch 1, for a small MLP and a small CNN of `ml.architectures`.

- `export.onnx_parity`: the largest |onnxruntime - torch| over a batch of random inputs after
  `ml.export.export_onnx` (the same check the export worker runs, rtol 1e-3 / atol 1e-5).
- `export.ort_vs_torch_b1`: median latency of one batch-1 forward pass, onnxruntime's CPU provider
  (numpy in, numpy out, as a serving client calls it) over torch eager (`inference_mode`), both
  with the same number of threads. Goal: ratio <= 1.0 (the export is no slower than the model).
- `export.api_s`: an ONNX export as a client gets it from the studio route, in the embedded mode
  `make run` starts (`bench.deployment.embedded`, in-process worker): `POST /api/export/<project>`
  of a 64-128-10 cluster, `GET` its status until it ends, `GET .../download` into a file; versus
  the same work by hand in this process: the same network (the cluster's template) through
  `torch.onnx.export` (the exporter, opset and batch axis Orchard uses) into a file, then the
  parity check every Orchard export runs (onnxruntime against torch on as many samples as the
  export's `validation` reports). The export + file write alone is in the notes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import Context, Row, row
from ml.architectures import build_architecture
from ml.export import check_onnx_parity, export_onnx

# (label, architecture, per-sample input shape)
NETWORKS = [
    ("mlp 784-256-10", "mlp", (784,)),
    ("cnn_small 1x28x28", "cnn_small", (1, 28, 28)),
]
# Keep metric texts within the table's column (34 characters).


def _exported(tmp: Path, name: str, arch: str, shape: tuple[int, ...]):
    model = build_architecture(arch, input_shape=shape, num_classes=10, seed=0).eval()
    path = tmp / f"{arch}.onnx"
    export_onnx(model, input_shape=(1, *shape), path=path)
    return model, path


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@row("export.onnx_parity")
def onnx_parity(ctx: Context) -> list[Row]:
    rows = []
    batch = 16 if ctx.quick else 256
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch, shape in NETWORKS:
            model, path = _exported(Path(tmp), label, arch, shape)
            sample = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
            parity = check_onnx_parity(model, path, sample)
            rows.append(
                Row(
                    "export.onnx_parity",
                    f"{label}, batch {batch}",
                    parity.max_abs_diff,
                    None,
                    "",
                    goal="passes rtol 1e-3 atol 1e-5",
                    notes=f"max |ort - torch|; parity {'passed' if parity.ok else 'FAILED'}, "
                    f"max rel diff {parity.max_rel_diff:.3g}",
                )
            )
    return rows


def _per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


@row("export.ort_vs_torch_b1")
def ort_vs_torch(ctx: Context) -> list[Row]:
    rows = []
    calls = 50 if ctx.quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch, shape in NETWORKS:
            model, path = _exported(Path(tmp), label, arch, shape)
            session = _session(path)
            x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
            tx = torch.from_numpy(x)

            def run_ort(session=session, x=x):
                session.run(["output"], {"input": x})

            def run_torch(model=model, tx=tx):
                with torch.inference_mode():
                    model(tx)

            run_ort(), run_torch()  # warm-up
            ort_us, torch_us = [], []
            for _ in range(ctx.repeats):  # interleaved so drift hits both sides alike
                torch_us.append(_per_call_us(run_torch, calls))
                ort_us.append(_per_call_us(run_ort, calls))
            rows.append(
                Row(
                    "export.ort_vs_torch_b1",
                    f"{label}, b1, {torch.get_num_threads()} thr",
                    statistics.median(ort_us),
                    statistics.median(torch_us),
                    "us",
                    goal="<= 1.0",
                    notes="per call: onnxruntime CPU session.run (numpy) vs torch eager "
                    "(inference_mode), same threads",
                )
            )
    return rows


def _by_hand(path: Path, samples: int) -> tuple[float, float]:
    """(seconds for torch.onnx.export + write, seconds with the parity check too)."""
    import onnxruntime as ort

    from ml.networks import build_network
    from ml.templates import DIGITS_64_128_10, parse_template

    start = time.perf_counter()
    model = build_network(parse_template(DIGITS_64_128_10), seed=0).eval()
    torch.onnx.export(
        model,
        (torch.rand(2, 64),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}},
    )
    written = time.perf_counter() - start
    x = np.random.default_rng(0).random((samples, 64), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["output"], {"input": x})
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.allclose(actual, expected, rtol=1e-3, atol=1e-5)
    return written, time.perf_counter() - start


def _through_api(dep, project: str, cluster: str, path: Path) -> tuple[float, dict]:
    """Seconds from the POST to the downloaded file on disk; the export's final status."""
    from bench.deployment import wait_until

    start = time.perf_counter()
    created = dep.ok(dep.post(f"/api/export/{project}", {"cluster_id": cluster, "format": "onnx"}))

    def ended():
        data = dep.ok(dep.get(f"/api/export/{project}/{created['id']}"))
        return data if data["status"] in ("completed", "failed", "aborted") else None

    done = wait_until(ended, timeout=300, what="the export", interval=0.02)
    if done["status"] != "completed":
        raise RuntimeError(f"export {done['status']}: {done.get('error')}")
    response = dep.get(f"/api/export/{project}/{created['id']}/download", stream=True)
    response.raise_for_status()
    with path.open("wb") as out:
        for chunk in response.iter_content(1 << 16):
            out.write(chunk)
    return time.perf_counter() - start, done


@row("export.api")
def export_api(ctx: Context) -> list[Row]:
    import warnings

    from bench.deployed import _demo
    from bench.deployment import shared_embedded
    from ml.templates import DIGITS_64_128_10

    ours, plain, written = [], [], []
    with tempfile.TemporaryDirectory(prefix="orchard-bench-export-") as tmp:
        work = Path(tmp)
        dep = shared_embedded(extra_env={"LOGIN_THROTTLE_RATE": "1000/min"})
        project, _ = _demo(dep)
        cluster = dep.ok(
            dep.post(
                f"/api/projects/{project}/clusters",
                {"name": "export", "template": DIGITS_64_128_10},
            ),
            201,
        )["id"]
        # Warm-up on both sides (imports, the worker's first task), then interleaved.
        _, done = _through_api(dep, project, cluster, work / "api.onnx")
        samples = int(done["validation"].get("num_samples") or 16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's notices
            _by_hand(work / "hand.onnx", samples)
            for _ in range(ctx.repeats):
                ours.append(_through_api(dep, project, cluster, work / "api.onnx")[0])
                alone, checked = _by_hand(work / "hand.onnx", samples)
                written.append(alone)
                plain.append(checked)
    return [
        Row(
            "export.api_s",
            "ONNX export over /api/export, s",
            statistics.median(ours),
            statistics.median(plain),
            "s",
            goal="<= 5 (one platform round trip on a sub-second job)",
            notes=f"POST -> status completed (polled 20 ms) -> download written, embedded mode; "
            f"baseline: torch.onnx.export + write + onnxruntime check on {samples} samples "
            f"(export + write alone {statistics.median(written):.3f} s); {ctx.repeats} repeats",
        )
    ]
