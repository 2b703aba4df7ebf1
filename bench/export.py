"""Exports: how closely an ONNX export reproduces the torch model, and how fast onnxruntime runs it
compared with torch eager at batch 1, for a small MLP and a small CNN of `ml.architectures`.

- `export.onnx_parity`: the largest |onnxruntime - torch| over a batch of random inputs after
  `ml.export.export_onnx` (the same check the export worker runs, rtol 1e-3 / atol 1e-5).
- `export.ort_vs_torch_b1`: median latency of one batch-1 forward pass, onnxruntime's CPU provider
  (numpy in, numpy out, as a serving client calls it) over torch eager (`inference_mode`), both
  with the same number of threads. Goal: ratio <= 1.0 (the export is no slower than the model).
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
