"""Label propagation (`ml.labelprop`) on generated volumes with known labels (ellipses drifting,
growing and turning from slice to slice, noisy images), every 6th slice annotated:

- `labelprop.dice`: mean Dice of the fused propagation on the unannotated slices between the
  first and the last annotation, versus the naive baseline that copies the nearest annotated
  slice (both absolute; ratio = propagated / nearest, higher is better).
- `labelprop.seconds_per_volume`: training the registration network on the volume plus the
  propagation, versus a hand-written torch loop doing the same training steps (same network,
  pairs, optimizer, batch size) without any propagation; the ratio shows what propagation and
  the library's bookkeeping add.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from bench.harness import Context, Row, row
from ml import labelprop as lp

EVERY = 6


def _region(mask: np.ndarray) -> np.ndarray:
    annotated = lp.annotated_slices(mask)
    region = np.zeros(mask.shape, dtype=bool)
    for z in range(annotated[0], annotated[-1] + 1):
        if z not in annotated:
            region[z] = True
    return region


def _plain_training(img: np.ndarray, config: lp.LabelPropConfig, device: torch.device) -> None:
    """What a user would write by hand for the same training: normalise, resize, randperm over
    the ordered neighbour pairs, Adam, local NCC + smoothness, clipping."""
    net = lp.build_net(config.base_channels, config.seed).to(device)
    vol = lp.normalise_intensities(img)
    x = torch.from_numpy(vol).to(device)[:, None]
    size = lp.working_size(config.size, vol.shape[1:])
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)
    lower = torch.arange(x.shape[0] - 1, device=device)
    moving, fixed = torch.cat([lower, lower + 1]), torch.cat([lower + 1, lower])
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(0)
    for _ in range(config.max_epochs):
        order = torch.randperm(moving.numel(), generator=generator).to(device)
        for start in range(0, moving.numel(), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = lp.registration_loss(net, x[moving[batch]], x[fixed[batch]], config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


@row("labelprop")
def labelprop(ctx: Context) -> list[Row]:
    device = torch.device("cuda" if ctx.device == "cuda" else "cpu")
    shape = (24, 64, 64)
    seeds = range(1) if ctx.quick else range(3)
    config = lp.LabelPropConfig(
        size=64,
        max_epochs=3 if ctx.quick else 10,
        base_channels=8 if ctx.quick else 16,
    )
    # Warm-up (allocator, kernels) on a small volume, so the first measured run is not penalised.
    warm_img, warm_labels = lp.make_volume((6, 32, 32), seed=99)
    warm_config = lp.LabelPropConfig(size=32, max_epochs=1, base_channels=config.base_channels)
    warm = lp.train_registration(warm_img, config=warm_config, device=device)
    lp.propagate(warm.net, warm_img, lp.sparse_annotation(warm_labels, 3), size=32, device=device)
    _plain_training(warm_img, warm_config, device)

    propagated, nearest, orchard_s, plain_s, propagate_s = [], [], [], [], []
    for seed in seeds:
        img, labels = lp.make_volume(shape, seed=seed)
        mask = lp.sparse_annotation(labels, EVERY)
        region = _region(mask)

        start = time.perf_counter()
        trained = lp.train_registration(img, config=config, device=device)
        out = lp.propagate(trained.net, img, mask, size=config.size, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        orchard_s.append(time.perf_counter() - start)
        propagate_s.append(out.seconds)

        start = time.perf_counter()
        _plain_training(img, config, device)
        plain_s.append(time.perf_counter() - start)

        propagated.append(lp.dice(out.y_fused, labels, where=region))
        nearest.append(lp.dice(lp.nearest_slice_labels(mask), labels, where=region))

    volumes = f"{len(orchard_s)} x {shape[0]}x{shape[1]}x{shape[2]}"
    return [
        Row(
            "labelprop.dice",
            f"fused Dice, every {EVERY}th slice, {volumes}",
            float(np.mean(propagated)),
            float(np.mean(nearest)),
            "",
            goal=">= 1.03 (higher is better)",
            notes=(
                f"baseline: copy the nearest annotated slice; {config.max_epochs} epochs, "
                f"{config.base_channels} base channels ({device.type})"
            ),
        ),
        Row(
            "labelprop.seconds_per_volume",
            f"train + propagate, {volumes} ({device.type})",
            statistics.median(orchard_s),
            statistics.median(plain_s),
            "s",
            goal="<= 1.2",
            notes=(
                "baseline: the same training steps in a hand-written loop, no propagation; "
                f"propagation alone {statistics.median(propagate_s):.3f} s"
            ),
        ),
    ]
