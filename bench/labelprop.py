"""Label propagation (`ml.labelprop`) over the generated family of `ml.volumes_synth`: blobs
that drift, grow and turn, a blob that splits and one that grows from nothing, thin structures
(a ring and a bar a few pixels wide); Gaussian noise of 0, 0.05, 0.10 and 0.20 of the intensity
range; a smooth intensity bias (0.3, at noise 0.05); 2, 3 and 5 annotated slices; 48x128x128 and
96x256x256 (`--quick`: a few small cases).

Each volume gets what the napari client's training does (`train_registration`, here 3 epochs
at a working size of 64, the checkpoint's recorded size), then every annotation count is
propagated with that checkpoint (`propagate`, the client's defaults: criteria `ncc`, reduction
`none`) on one torch thread. Dice is measured on the unannotated slices between the first and
the last annotated one, against copying the nearest annotated slice and interpolating signed
distance maps between annotated slices. The whole table is printed (markdown) and kept in the
rows' `extra`:

- `labelprop.dice`: mean Dice of Orchard versus the better baseline of each case (ratio higher
  is better); notes count the cases that meet the goal (above both baselines at noise <= 0.10
  with 3+ annotated slices, never more than 0.02 below the better one elsewhere).
- `labelprop.inference_cpu_s`: CPU seconds of one propagation of a 48x128x128 volume (median),
  against the 10 s goal.
- `labelprop.train_cpu_s`: CPU seconds of the training per 48x128x128 volume (median).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from bench.harness import Context, Row, row
from ml import labelprop as lp
from ml import volumes_synth as vs

EPOCHS = 3
TRAIN_SIZE = 64


def meets_goal(case: vs.Case, orchard: float, nearest: float, sdf: float) -> bool:
    better = max(nearest, sdf)
    if case.noise <= 0.10 and case.annotated >= 3:
        return orchard > better
    return orchard >= better - 0.02


def _cpu(fn):
    start = time.process_time()
    value = fn()
    return value, time.process_time() - start


def run_family(
    family: list[vs.Case], *, device: torch.device, epochs: int = EPOCHS, seed: int = 1
) -> list[dict]:
    """One dict per case: Dice of Orchard / nearest copy / SDF interpolation, CPU seconds."""
    results = []
    volumes: dict[tuple, tuple] = {}
    for case in family:
        key = (case.shape, case.noise, case.bias, case.depth, case.size)
        if key not in volumes:
            img, labels = vs.make(
                case.shape,
                depth=case.depth,
                size=case.size,
                noise=case.noise,
                bias=case.bias,
                seed=seed,
            )
            config = lp.LabelPropConfig(size=TRAIN_SIZE, max_epochs=epochs)
            trained, train_s = _cpu(
                lambda img=img, config=config: lp.train_registration(
                    img, config=config, device=device
                )
            )
            volumes = {key: (img, labels, trained, train_s)}  # one volume in memory at a time
        img, labels, trained, train_s = volumes[key]
        mask, annotated = vs.annotate(labels, case.annotated)
        region = vs.region_between(labels.shape, annotated)
        out, infer_s = _cpu(
            lambda mask=mask, img=img, trained=trained: lp.propagate(
                trained.net, img, mask, size=trained.size, criteria="ncc", device=device
            )
        )
        orchard = lp.dice(out.y_fused, labels, where=region)
        nearest = lp.dice(lp.nearest_slice_labels(mask), labels, where=region)
        sdf = lp.dice(lp.sdf_interpolation_labels(mask), labels, where=region)
        results.append(
            {
                "case": case.name,
                "shape": case.shape,
                "size": f"{case.depth}x{case.size}x{case.size}",
                "noise": case.noise,
                "bias": case.bias,
                "annotated": case.annotated,
                "orchard": round(orchard, 4),
                "nearest": round(nearest, 4),
                "sdf": round(sdf, 4),
                "goal": meets_goal(case, orchard, nearest, sdf),
                "infer_cpu_s": round(infer_s, 2),
                "train_cpu_s": round(train_s, 2),
            }
        )
    return results


def markdown(results: list[dict]) -> str:
    lines = [
        "| volume | shape | noise | bias | annotated | Orchard | nearest copy | SDF interp. "
        "| goal | propagate CPU s | train CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['shape']} | {r['noise']:.2f} | {r['bias']:g} | {r['annotated']} "
            f"| {r['orchard']:.3f} | {r['nearest']:.3f} | {r['sdf']:.3f} "
            f"| {'yes' if r['goal'] else 'NO'} | {r['infer_cpu_s']:.1f} | {r['train_cpu_s']:.1f} |"
        )
    return "\n".join(lines)


@row("labelprop")
def labelprop(ctx: Context) -> list[Row]:
    device = torch.device("cuda" if ctx.device == "cuda" else "cpu")
    if ctx.quick:
        family = list(
            vs.cases(
                shapes=("blobs", "thin"),
                noises=(0.10,),
                biases=(0.0,),
                annotated=(3,),
                sizes=((24, 64),),
            )
        )
        epochs = 1
    else:
        family = list(vs.cases())
        epochs = EPOCHS
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the goal: one torch thread
    try:
        results = run_family(family, device=device, epochs=epochs)
    finally:
        torch.set_num_threads(threads)
    print(markdown(results), flush=True)

    orchard = float(np.mean([r["orchard"] for r in results]))
    better = float(np.mean([max(r["nearest"], r["sdf"]) for r in results]))
    met = sum(r["goal"] for r in results)
    first = results[0]["size"]
    small = [r for r in results if r["size"] == "48x128x128"] or [
        r for r in results if r["size"] == first
    ]
    size = small[0]["size"]
    infer = statistics.median(r["infer_cpu_s"] for r in small)
    train = statistics.median(r["train_cpu_s"] for r in small)
    table = {"table": results}
    return [
        Row(
            "labelprop.dice",
            f"mean Dice over {len(results)} generated cases vs the better baseline of each",
            orchard,
            better,
            "",
            goal="above both at noise <= 0.10 with 3+ slices; >= better - 0.02 elsewhere",
            notes=f"{met}/{len(results)} cases meet the goal ({device.type}); quality, not time: "
            "Orchard trains and runs a network, the baselines are analytic",
            extra=table,
        ),
        Row(
            "labelprop.inference_cpu_s",
            f"propagate one {size} volume, 1 torch thread (median)",
            infer,
            10.0,
            "s",
            goal="<= 10 s CPU",
            notes="baseline: the goal (10 s), not a measurement",
        ),
        Row(
            "labelprop.train_cpu_s",
            f"train one {size} volume, {epochs} epochs at {TRAIN_SIZE} (median)",
            train,
            None,
            "s",
            goal="<= 10 s CPU",
        ),
    ]
