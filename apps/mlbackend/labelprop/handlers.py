"""Task kinds of the labelprop half, run by the job engine like every task:

- `labelprop_propagate` (/inference): load the named checkpoint, propagate the session's mask
  (and its hints, as extra annotated slices) through its volume with `ml.labelprop.propagate`,
  store `Y_up`/`Y_down`/`Y_fused` as an npz.
- `labelprop_train` (/training): train the registration network on the volume (from scratch or
  from `pretrained_ckpt`), store it as a checkpoint in the project's current checkpoint
  directory (as it was when the request came) under the requested name (a name already there
  gets the next free `-2`, `-3`, ...: nothing is overwritten), recording the working size
  really trained at, then propagate with it as above.

The task's params carry the session id and the options the service already checked. Devices:
`"cuda"` runs on the GPU when this worker has one, else on the CPU (recorded as an event).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from apps.core.exceptions import Conflict, ValidationFailed
from apps.tasks import registry

PROPAGATE_TIME_LIMIT_S = 3600
TRAIN_TIME_LIMIT_S = 6 * 3600


def _validate(*, params: dict[str, Any]) -> None:
    if not isinstance(params.get("session_id"), str):
        raise ValidationFailed.for_field("params", "session_id must name a labelprop session.")


def _device(ctx) -> str:
    import torch

    requested = ctx.params.get("device", "cpu")
    used = "cuda" if requested == "cuda" and torch.cuda.is_available() else "cpu"
    if used != requested:
        ctx.record("device", {"requested": requested, "used": used})
    return used


def _inputs(ctx):
    """The session, its volume (memory-mapped), its mask and its hints (None when not sent)."""
    from apps.mlbackend.labelprop import storage
    from apps.mlbackend.models import LabelpropSession

    session = (
        LabelpropSession.objects.select_related("volume")
        .filter(pk=ctx.params["session_id"], project_id=ctx.task.project_id)
        .first()
    )
    if session is None:
        raise Conflict("The labelprop session was deleted.")
    if session.volume is None:
        raise Conflict("The session's volume was deleted.")
    img = np.load(storage.volume_path(session.volume), mmap_mode="r", allow_pickle=False)
    directory = storage.session_dir(session)
    mask = np.load(directory / storage.MASK_FILE, allow_pickle=False)
    hints_path = directory / storage.HINTS_FILE
    hints = np.load(hints_path, allow_pickle=False) if hints_path.exists() else None
    return session, img, mask, hints


def _load_checkpoint(ctx):
    from apps.mlbackend.labelprop import storage
    from apps.mlbackend.models import LabelpropCheckpoint
    from ml.labelprop import LabelPropError, checkpoint_from_bytes

    checkpoint = LabelpropCheckpoint.objects.filter(
        pk=ctx.params.get("checkpoint_id"), project_id=ctx.task.project_id
    ).first()
    if checkpoint is None:
        raise Conflict("The checkpoint was deleted.")
    try:
        net, _meta = checkpoint_from_bytes(storage.checkpoint_path(checkpoint).read_bytes())
    except (OSError, LabelPropError) as exc:
        raise Conflict(f"The checkpoint cannot be read: {exc}") from None
    return checkpoint, net


def _propagate(ctx, net, img, mask, hints, device: str):
    from ml.labelprop import LabelPropError, propagate

    params = ctx.params
    try:
        return propagate(
            net,
            img,
            mask,
            hints=hints,
            z_axis=int(params["z_axis"]),
            size=int(params["size"]),
            label=int(params.get("label", 0)),
            criteria=params["criteria"],
            reduction=params["reduction"],
            device=device,
        )
    except LabelPropError as exc:
        raise ValidationFailed(str(exc)) from None


def propagate_task(ctx) -> dict[str, Any]:
    """/inference: propagate with a stored checkpoint."""
    from apps.mlbackend.labelprop.services import session_finish

    session, img, mask, hints = _inputs(ctx)
    checkpoint, net = _load_checkpoint(ctx)
    device = _device(ctx)
    ctx.progress(0.1, stage="propagating")
    ctx.check()
    result = _propagate(ctx, net, img, mask, hints, device)
    summary = {
        "annotated_slices": result.annotated,
        "hint_slices": result.hint_slices,
        "labels": result.labels,
        "noise": round(result.noise, 4),
        "seconds": round(result.seconds, 3),
        "device": device,
        "checkpoint": checkpoint.name,
    }
    session_finish(session=session, arrays=result.as_arrays(), summary=summary)
    return {"session_id": str(session.pk), **summary}


def train_task(ctx) -> dict[str, Any]:
    """/training: train (optionally from a checkpoint), store the checkpoint, propagate."""
    from apps.mlbackend.labelprop import services
    from ml.labelprop import LabelPropConfig, build_net, checkpoint_to_bytes, train_registration

    session, img, mask, hints = _inputs(ctx)
    params = ctx.params
    pretrained = None
    if params.get("checkpoint_id"):
        pretrained, net = _load_checkpoint(ctx)
    else:
        net = build_net(LabelPropConfig.base_channels, seed=0)
    device = _device(ctx)
    config = LabelPropConfig(
        size=int(params["size"]),
        max_epochs=int(params["max_epochs"]),
        base_channels=net.base_channels,
    )
    epochs = config.max_epochs

    def on_epoch(epoch: int, loss: float) -> None:
        ctx.progress(0.9 * epoch / epochs, stage="training", epoch=epoch, loss=loss)
        ctx.record("epoch", {"epoch": epoch, "loss": loss})

    trained = train_registration(
        img,
        z_axis=int(params["z_axis"]),
        config=config,
        net=net,
        device=device,
        on_epoch=on_epoch,
        should_stop=ctx.should_stop,
    )
    if trained.stopped:
        return {"session_id": str(session.pk), "stopped": True}
    # Never overwrites: a name already in the directory gets the next free "-2", "-3", ...
    name = params.get("name") or services.default_checkpoint_name(session)
    metadata = {
        "size": trained.size,  # the size really used (the request's, capped by the slices)
        "z_axis": int(params["z_axis"]),
        "epochs": trained.epochs_completed,
        "final_loss": trained.losses[-1] if trained.losses else None,
        "volume_hash": session.volume.hash,
        "session_id": str(session.pk),
        "pretrained": pretrained.name if pretrained is not None else None,
        "pretraining": bool(params.get("pretraining")),
    }
    data = checkpoint_to_bytes(trained.net, metadata)
    checkpoint = services.checkpoint_store(
        project_id=session.project_id,
        owner_id=session.owner_id,
        directory=params["directory"],
        name=name,
        data=data,
        metadata={**metadata, "base_channels": trained.net.base_channels},
    )
    ctx.progress(0.9, stage="propagating")
    ctx.check()
    result = _propagate(ctx, trained.net, img, mask, hints, device)
    summary = {
        "annotated_slices": result.annotated,
        "hint_slices": result.hint_slices,
        "labels": result.labels,
        "noise": round(result.noise, 4),
        "size": trained.size,
        "epochs": trained.epochs_completed,
        "losses": trained.losses,
        "train_seconds": round(trained.seconds, 3),
        "seconds": round(result.seconds, 3),
        "device": device,
        "checkpoint": checkpoint.name,
    }
    services.session_finish(
        session=session, arrays=result.as_arrays(), summary=summary, checkpoint=checkpoint
    )
    return {"session_id": str(session.pk), **summary}


def register_kinds() -> None:
    registry.register(
        "labelprop_propagate",
        propagate_task,
        time_limit_s=PROPAGATE_TIME_LIMIT_S,
        max_attempts=2,
        validate=_validate,
    )
    registry.register(
        "labelprop_train",
        train_task,
        time_limit_s=TRAIN_TIME_LIMIT_S,
        max_attempts=2,
        validate=_validate,
    )
