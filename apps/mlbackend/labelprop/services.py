"""Writes of the labelprop half: reading the client's requests, starting sessions (rows, files,
a task on the job engine), storing checkpoints, selecting the checkpoint directory.

A request is read in two steps (in `reading.py`). Its transport (the `arrays` part must be an npz,
`params` a JSON object) is checked first: a malformed request is refused (400) and nothing is
written. What the request asks is checked next (volume known, shapes matching, checkpoint
present, values in range): a request the napari client could really send but that cannot run becomes a session
that failed from the start, because that client polls `/get_session_list` for the token it was
answered and shows `/download_inference`'s text as the error; a bare 400 would leave it polling
forever. For the same reason the view answers a refused request (400, 403, 413, 500) with the
token of a session failed from the start (`session_refuse`).

Checkpoint names are kept as given (only commas, control characters and lone surrogates are
refused: the list is comma-joined, a row holds UTF-8 text; files are named by id) and never
overwritten: `/send_ckpt` refuses a name already in the directory, a training takes the next
free `<name>-2.ckpt`, `-3`, ...
`/set_ckpt_dir` takes what the widget sends, upstream-style a server path, and selects the
project storage location named by its last part.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.clusters.runtime import atomic_write
from apps.core.api.parsers import UNSTORABLE_CHARS
from apps.core.exceptions import PayloadTooLarge, ValidationFailed
from apps.core.tenancy import ProjectAccess
from apps.mlbackend.labelprop import selectors, storage
from apps.mlbackend.labelprop.reading import (
    CKPT_SUFFIX,
    MAX_NAME_CHARS,
    ArraysUnreadable,
    RequestArrays,
    _Plan,
    _plan,
    checkpoint_name,
    ckpt_dir_name,
)
from apps.mlbackend.models import (
    LabelpropCheckpoint,
    LabelpropSession,
    LabelpropSessionKind,
    LabelpropSessionState,
    LabelpropVolume,
    LabelpropWorkspace,
)

logger = logging.getLogger(__name__)

KIND_PROPAGATE = "labelprop_propagate"
KIND_TRAIN = "labelprop_train"
MAX_CHECKPOINT_BYTES = 512 * 1024 * 1024


# --- starting sessions ---------------------------------------------------------------------------

REFUSAL_MAX_CHARS = 1000


def _storable_text(text: str) -> str:
    return UNSTORABLE_CHARS.sub("\ufffd", text)


def _storable(value: Any) -> Any:
    """`value` as every database keeps it in a JSON column: text without lone surrogates or NUL
    (each becomes U+FFFD), non-finite numbers as null, anything else JSON lacks as its text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {_storable_text(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return _storable_text(str(value))


def _session_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """A request's params as its session keeps them (what `/get_session_info` answers): all
    but `hash`, storable (`_storable`); {} when even that cannot be done."""
    try:
        return _storable({k: v for k, v in (params or {}).items() if k != "hash"})
    except RecursionError:  # nested deeper than the stack allows
        return {}


def session_refuse(
    *,
    access: ProjectAccess,
    kind: str,
    status: int,
    message: str,
    params: dict[str, Any] | None = None,
) -> LabelpropSession | None:
    """Record a refused `/inference` or `/training` request as a session failed from the start
    (no volume, no files, no task), so that the napari client, which takes any answer for a
    token and polls for it, finds it in `/get_session_list` and shows the reason that
    `/download_inference` gives. Whatever the params refused, only what a JSON column keeps is
    stored. None when even that row cannot be written (the database is down): the caller
    answers the plain error text."""
    error = _storable_text(f"Request refused ({status}): {message}"[:REFUSAL_MAX_CHARS])
    try:
        with transaction.atomic():
            return LabelpropSession.objects.create(
                project=access.project,
                owner=access.user,
                kind=kind,
                params=_session_params(params),
                state=LabelpropSessionState.FAILED,
                error=error,
                summary={"refused": status},
                finished_at=timezone.now(),
            )
    except Exception:  # any database failure: fall back to the plain answer
        logger.exception("labelprop: cannot record a refused request")
        return None


def session_start(
    *,
    access: ProjectAccess,
    kind: str,
    arrays: RequestArrays,
    params: dict[str, Any],
) -> LabelpropSession:
    """Start an inference or training session: store the volume (once per hash), the mask, the
    session row and its task (enqueued on commit). A request that cannot run is a session
    failed from the start, with the reason as its error and no files; its image is never
    decompressed. An array found corrupt as it is read raises ArraysUnreadable (400)."""
    access.require_write()
    info = _session_params(params)
    try:
        plan = _plan(access, kind, arrays, params)
    except ArraysUnreadable:
        raise
    except ValidationFailed as exc:
        return LabelpropSession.objects.create(
            project=access.project,
            owner=access.user,
            kind=kind,
            params=info,
            state=LabelpropSessionState.FAILED,
            error=_storable_text(exc.message),
            finished_at=timezone.now(),
        )
    written: list = []
    try:
        # The image is written before the transaction: seconds of decompressing and writing
        # must not hold the database's write lock.
        if plan.volume is not None:
            volume, new = plan.volume, False
        else:
            volume, new = _volume_write(access, arrays, written)
        with transaction.atomic():
            if new:
                volume = _volume_save(access, volume)
            session = LabelpropSession.objects.create(
                project=access.project,
                owner=access.user,
                kind=kind,
                params=info,
                volume=volume,
                checkpoint=plan.checkpoint if kind == LabelpropSessionKind.INFERENCE else None,
            )
            directory = storage.session_dir(session)
            written.append(directory)
            storage.save_npy(directory / storage.MASK_FILE, plan.mask)
            if plan.hints is not None:
                storage.save_npy(directory / storage.HINTS_FILE, plan.hints)
            session.task = _task_create(access, kind, session, plan)
            session.save(update_fields=["task", "updated_at"])
    except BaseException:
        for path in written:
            if path.is_dir():
                storage.remove_tree(path)
            else:
                path.unlink(missing_ok=True)
        raise
    return session


def _volume_write(
    access: ProjectAccess, arrays: RequestArrays, written: list
) -> tuple[LabelpropVolume, bool]:
    """The request's image as a volume: a new row (not saved yet, True) whose .npy file (float32)
    is written as the image is decompressed, chunk by chunk; or the project's row of the same
    hash (False), the file then dropped."""
    volume = LabelpropVolume(
        project=access.project, owner=access.user, shape=list(arrays.header("img").shape)
    )
    path = storage.volume_path(volume)
    written.append(path)
    volume.hash, volume.size_bytes = arrays.image_save(path)
    stored = LabelpropVolume.objects.visible_to(access).filter(hash=volume.hash).first()
    if stored is not None:
        path.unlink(missing_ok=True)
        return stored, False
    return volume, True


def _volume_save(access: ProjectAccess, volume: LabelpropVolume) -> LabelpropVolume:
    """Save a new volume row; the existing row when the same hash was stored concurrently."""
    try:
        with transaction.atomic():
            volume.save(force_insert=True)
    except IntegrityError:
        storage.volume_path(volume).unlink(missing_ok=True)
        return LabelpropVolume.objects.visible_to(access).get(hash=volume.hash)
    return volume


def _task_create(access: ProjectAccess, kind: str, session: LabelpropSession, plan: _Plan):
    from apps.clusters.services import host_queue_check
    from apps.tasks.services import task_create

    task_kind = KIND_PROPAGATE if kind == LabelpropSessionKind.INFERENCE else KIND_TRAIN
    params = {"session_id": str(session.pk), **plan.options}
    if plan.checkpoint is not None:
        params["checkpoint_id"] = str(plan.checkpoint.pk)
    return task_create(
        project=access.project,
        actor=access.user,
        kind=task_kind,
        name=f"labelprop {kind} {session.pk}",
        params=params,
        queue=host_queue_check(_queue_for(plan.options.get("device"))),
    )


def _queue_for(device) -> str:
    """A "cuda" session goes to the first available GPU host's queue, else the CPU's."""
    if device != "cuda":
        return "cpu"
    from apps.clusters.models import Host, HostKind, HostState

    gpu = Host.objects.filter(kind=HostKind.GPU, state=HostState.AVAILABLE).order_by("pk").first()
    return gpu.pk if gpu is not None else "cpu"


# --- checkpoints ---------------------------------------------------------------------------------


def ckpt_dir_set(*, access: ProjectAccess, name: str | None) -> str:
    """Select the checkpoint directory: a location inside the project's storage (created when
    new), named by the value's last path part (`ckpt_dir_name`), never a server path."""
    access.require_write()
    name = ckpt_dir_name(name)
    LabelpropWorkspace.objects.update_or_create(project=access.project, defaults={"ckpt_dir": name})
    return name


class CheckpointExists(ValidationFailed):
    """A checkpoint of that name is already in the directory (never overwritten)."""


VERSIONS_MAX = 1000


def _versioned(name: str, version: int) -> str:
    stem = name[: -len(CKPT_SUFFIX)] if name.endswith(CKPT_SUFFIX) else name
    suffix = f"-{version}{CKPT_SUFFIX}"
    return stem[: MAX_NAME_CHARS - len(suffix)] + suffix


def checkpoint_store(
    *,
    project_id: str,
    owner_id: int | None,
    directory: str,
    name: str,
    data: bytes,
    metadata: dict[str, Any],
    versioned: bool = True,
) -> LabelpropCheckpoint:
    """Store checkpoint bytes under `name` in `directory`. A checkpoint of that name is never
    overwritten: the new one takes the first free `<stem>-2.ckpt`, `-3`, ... (`versioned`, what
    a training does: its work is not lost) or is refused (CheckpointExists, 400)."""
    checkpoint = LabelpropCheckpoint(
        id=uuid.uuid4(),
        project_id=project_id,
        owner_id=owner_id,
        directory=directory,
        name=name,
        size_bytes=len(data),
        metadata=metadata,
    )
    path = storage.checkpoint_path(checkpoint)
    atomic_write(path, data)
    try:
        taken = set(
            LabelpropCheckpoint.objects.filter(
                project_id=project_id, directory=directory
            ).values_list("name", flat=True)
        )
        for version in range(1, VERSIONS_MAX + 1):
            candidate = name if version == 1 else _versioned(name, version)
            if candidate in taken:
                if not versioned:
                    raise CheckpointExists.for_field(
                        "ckpt",
                        f"a checkpoint named {name!r} is already in the directory "
                        f"{directory!r}: rename the file (checkpoints are never overwritten).",
                    )
                continue
            checkpoint.name = candidate
            try:
                with transaction.atomic():
                    checkpoint.save(force_insert=True)
                return checkpoint
            except IntegrityError:  # stored concurrently under that name: take the next
                if not versioned:
                    raise CheckpointExists.for_field(
                        "ckpt", f"a checkpoint named {name!r} is already in {directory!r}."
                    ) from None
        raise CheckpointExists.for_field("name", f"too many versions of {name!r}.")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def checkpoint_upload(*, access: ProjectAccess, filename: str | None, fileobj) -> str:
    """`/send_ckpt`: store an uploaded labelprop checkpoint (safetensors written by Orchard)
    under its file name in the current directory (a name already there is refused, never
    overwritten). Pickled checkpoints are never loaded."""
    from ml.labelprop import LabelPropError, checkpoint_from_bytes

    access.require_write()
    if fileobj is None:
        raise ValidationFailed.for_field("ckpt", "missing (a file part named 'ckpt').")
    if getattr(fileobj, "size", 0) > MAX_CHECKPOINT_BYTES:
        raise PayloadTooLarge("ckpt: larger than a labelprop checkpoint can be.")
    name = checkpoint_name(filename or "", field_name="ckpt")
    if not name:
        raise ValidationFailed.for_field("ckpt", "the file needs a name.")
    data = fileobj.read(MAX_CHECKPOINT_BYTES + 1)
    try:
        _net, meta = checkpoint_from_bytes(data)
    except LabelPropError as exc:
        raise ValidationFailed.for_field("ckpt", str(exc)) from None
    metadata = {k: v for k, v in meta.items() if k != "format"}
    metadata["uploaded"] = True
    checkpoint = checkpoint_store(
        project_id=access.project.pk,
        owner_id=access.user.pk,
        directory=selectors.ckpt_dir(access=access),
        name=name,
        data=data,
        metadata=metadata,
        versioned=False,
    )
    return checkpoint.name


# --- finishing (called by the task handlers) -----------------------------------------------------


def session_finish(
    *,
    session: LabelpropSession,
    arrays: dict[str, np.ndarray],
    summary: dict[str, Any],
    checkpoint: LabelpropCheckpoint | None = None,
) -> None:
    """Write the session's results (npz) and mark it finished."""
    storage.save_npz(storage.session_dir(session) / storage.RESULT_FILE, arrays)
    fields: dict[str, Any] = {
        "state": LabelpropSessionState.FINISHED,
        "finished_at": timezone.now(),
        "summary": summary,
        "updated_at": timezone.now(),
    }
    if checkpoint is not None:
        fields["checkpoint"] = checkpoint
    LabelpropSession.objects.filter(pk=session.pk).update(**fields)


# --- deleting (admin) ----------------------------------------------------------------------------


def session_delete(*, session: LabelpropSession) -> None:
    directory = storage.session_dir(session)
    session.delete()
    transaction.on_commit(lambda: storage.remove_tree(directory))


def volume_delete(*, volume: LabelpropVolume) -> None:
    path = storage.volume_path(volume)
    volume.delete()
    transaction.on_commit(lambda: path.unlink(missing_ok=True))


def checkpoint_delete(*, checkpoint: LabelpropCheckpoint) -> None:
    path = storage.checkpoint_path(checkpoint)
    checkpoint.delete()
    transaction.on_commit(lambda: path.unlink(missing_ok=True))


def default_checkpoint_name(session: LabelpropSession) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"labelprop-{stamp}-{str(session.pk)[:8]}{CKPT_SUFFIX}"
