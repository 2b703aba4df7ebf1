"""Writes of the labelprop half: reading the client's requests, starting sessions (rows, files,
a task on the job engine), storing checkpoints, selecting the checkpoint directory.

A request is read in two steps. Its transport (the `arrays` part must be an npz, `params` a JSON
object) is checked first: a malformed request is refused (400) and nothing is written. What the
request asks is checked next (volume known, shapes matching, checkpoint present, values in
range): a request the napari client could really send but that cannot run becomes a session
that failed from the start, because that client polls `/get_session_list` for the token it was
answered and shows `/download_inference`'s text as the error; a bare 400 would leave it polling
forever. For the same reason the view answers a refused request (400, 403, 413, 500) with the
token of a session failed from the start (`session_refuse`).

Checkpoint names are kept as given (only commas and control characters are refused: the list
is comma-joined; files are named by id) and never overwritten: `/send_ckpt` refuses a name
already in the directory, a training takes the next free `<name>-2.ckpt`, `-3`, ...
`/set_ckpt_dir` takes what the widget sends, upstream-style a server path, and selects the
project storage location named by its last part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.clusters.runtime import atomic_write
from apps.core.conf import setting
from apps.core.exceptions import NotFound, PayloadTooLarge, ValidationFailed
from apps.core.safeio import ArrayLimits, load_npz
from apps.core.tenancy import ProjectAccess
from apps.mlbackend.labelprop import selectors, storage
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
DEVICES = ("cuda", "cpu")
DEFAULT_SIZE = 256
MAX_SIZE = 4096
MAX_EPOCHS = 1000
MAX_CHECKPOINT_BYTES = 512 * 1024 * 1024
CKPT_SUFFIX = ".ckpt"
MAX_NAME_CHARS = 200  # LabelpropCheckpoint.name's max_length
MAX_PARAMS_BYTES = 64 * 1024
_DIR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIR_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DIR_REFUSED = (
    "Unallowed checkpoint directory: name one of the project's storage locations (a path "
    "selects the location named by its last part; letters, digits, '.', '_', '-')."
)
_HASH_RE = re.compile(r"^[0-9a-f]{32}$")
# Checkpoint names are shown comma-joined: a comma (or a control character) cannot be kept.
_NAME_FORBIDDEN = re.compile(r"[,\x00-\x1f\x7f-\x9f]")
_NUMERIC = "biuf"


def max_voxels() -> int:
    return int(setting("LABELPROP_MAX_VOXELS"))


def array_limits() -> ArrayLimits:
    """Limits on the `arrays` npz, checked from its zip entries and npy headers before anything
    is decompressed: voxels per array, bytes of all arrays, and the number of entries."""
    voxels = max_voxels()
    return ArrayLimits(
        max_elements=voxels,
        max_bytes=int(setting("LABELPROP_MAX_NPZ_BYTES")),
        max_members=int(setting("LABELPROP_NPZ_MAX_MEMBERS")),
        elements_setting="LABELPROP_MAX_VOXELS",
        bytes_setting="LABELPROP_MAX_NPZ_BYTES",
        members_setting="LABELPROP_NPZ_MAX_MEMBERS",
    )


def volume_hash(img: np.ndarray) -> str:
    """The client's hash: md5 of the image's float32 bytes (C order)."""
    return hashlib.md5(np.ascontiguousarray(img, dtype=np.float32).tobytes()).hexdigest()


# --- reading a request ---------------------------------------------------------------------------


def read_params(raw: bytes | str | None) -> dict[str, Any]:
    """The `params` part: a JSON object (400 otherwise)."""
    if raw is None:
        raise ValidationFailed.for_field("params", "missing (a JSON part named 'params').")
    if len(raw) > MAX_PARAMS_BYTES:
        raise ValidationFailed.for_field("params", f"larger than {MAX_PARAMS_BYTES} bytes.")
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        raise ValidationFailed.for_field("params", "not valid JSON.") from None
    if not isinstance(value, dict):
        raise ValidationFailed.for_field("params", "must be a JSON object.")
    return value


def read_npz(fileobj: IO[bytes] | None) -> dict[str, np.ndarray]:
    """The `arrays` part: an npz (a zip of .npy files, pickles refused). Every entry's npy
    header is checked against `array_limits()` (413 naming the setting) before any array is
    decompressed or allocated, and members are read no further than their headers declare."""
    if fileobj is None:
        raise ValidationFailed.for_field("arrays", "missing (an npz part named 'arrays').")
    if not hasattr(fileobj, "seek"):
        raise ValidationFailed.for_field("arrays", "must be a file part holding an npz.")
    try:
        fileobj.seek(0)
        if not zipfile.is_zipfile(fileobj):
            raise ValidationFailed.for_field("arrays", "not an npz file (np.savez_compressed).")
        fileobj.seek(0)
        return load_npz(fileobj, field="arrays", limits=array_limits())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError) as exc:
        raise ValidationFailed.for_field("arrays", f"not a readable npz file ({exc}).") from None


# --- what a request asks -------------------------------------------------------------------------


def _int(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed.for_field(name, f"must be an integer from {low} to {high}.")
    return value


def _choice(params: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise ValidationFailed.for_field(name, f"must be one of {', '.join(choices)}.")
    return value


def _bool(params: dict, name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ValidationFailed.for_field(name, "must be true or false.")
    return value


def checkpoint_name(raw: Any, *, field_name: str = "name") -> str:
    """A checkpoint's listed name, as the user gave it: the last part of a path (the client
    may send one), Unicode kept (NFC), `.ckpt` (upstream's extension) added when missing; ""
    when nothing is given. The name is only a row's field (files are named by id), so nothing
    is rewritten; refused (400) are commas (`/list_ckpts` joins names with them), control
    characters and names longer than MAX_NAME_CHARS."""
    if not isinstance(raw, str):
        raise ValidationFailed.for_field(field_name, "must be a string.")
    base = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1].strip())
    if base in ("", CKPT_SUFFIX):
        return ""
    if _NAME_FORBIDDEN.search(base):
        raise ValidationFailed.for_field(
            field_name,
            f"{base!r}: a checkpoint name may not hold commas or control characters "
            "(/list_ckpts joins the names with commas).",
        )
    if not base.endswith(CKPT_SUFFIX):
        base += CKPT_SUFFIX
    if len(base) > MAX_NAME_CHARS:
        raise ValidationFailed.for_field(
            field_name, f"a checkpoint name may be at most {MAX_NAME_CHARS} characters long."
        )
    return base


def ckpt_dir_name(raw: Any) -> str:
    """The storage location a `/set_ckpt_dir` value selects. The client sends what its user
    typed, upstream-style a server path (`/data/ckpts`, `~/label_prop_checkpoints`,
    `C:\\ckpts\\`): its last part names a location inside the project's storage (never the
    server path itself); characters other than letters, digits, '.', '_', '-' become '_'."""
    if not isinstance(raw, str):
        raise ValidationFailed.for_field("ckpt_dir", _DIR_REFUSED)
    parts = [p for p in raw.replace("\\", "/").split("/") if p.strip()]
    last = parts[-1].strip() if parts else ""
    if last.endswith(":"):  # a bare drive letter ("C:")
        last = ""
    name = _DIR_UNSAFE.sub("_", last).strip("._-")[:64] if last not in (".", "..") else ""
    if not name or not _DIR_RE.fullmatch(name) or set(name) <= {"."}:
        raise ValidationFailed.for_field("ckpt_dir", _DIR_REFUSED)
    return name


def _image(arrays: dict[str, np.ndarray]) -> np.ndarray:
    img = arrays.get("img")
    if img is None:
        raise ValidationFailed.for_field(
            "arrays", "no 'img' array, and params name no known 'hash'."
        )
    if img.ndim != 3 or min(img.shape) < 1:
        raise ValidationFailed.for_field("img", f"must be a 3D volume, got shape {img.shape}.")
    if img.dtype.kind not in _NUMERIC:
        raise ValidationFailed.for_field("img", f"must hold numbers, got {img.dtype}.")
    if img.size > max_voxels():
        raise ValidationFailed.for_field(
            "img", f"has {img.size} voxels, more than the {max_voxels()} allowed."
        )
    return img


def _labels(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = arrays[name]
    if tuple(array.shape) != tuple(shape):
        raise ValidationFailed.for_field(
            name, f"shape {tuple(array.shape)} does not match the image's {tuple(shape)}."
        )
    if array.dtype.kind not in _NUMERIC:
        raise ValidationFailed.for_field(name, f"must hold integer labels, got {array.dtype}.")
    if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ValidationFailed.for_field(name, "must hold integer labels.")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValidationFailed.for_field(name, "labels must lie in 0..255.")
    return array.astype(np.uint8)


@dataclass
class _Plan:
    """A request checked in memory, ready to be written."""

    hash: str
    img: np.ndarray | None  # None: the volume is already stored
    volume: LabelpropVolume | None
    mask: np.ndarray
    hints: np.ndarray | None
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: LabelpropCheckpoint | None = None


def _plan(
    access: ProjectAccess, kind: str, arrays: dict[str, np.ndarray], params: dict[str, Any]
) -> _Plan:
    """Check everything a request asks; ValidationFailed names the first problem."""
    volume, img = None, None
    if "hash" in params:
        digest = params["hash"]
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest.lower()):
            raise ValidationFailed.for_field("hash", "must be an md5 hex digest.")
        try:
            volume = selectors.volume_get(access=access, hash=digest)
        except NotFound:
            raise ValidationFailed.for_field(
                "hash", "unknown volume (not in /list_hash): send the image again."
            ) from None
        digest, shape = volume.hash, tuple(volume.shape)
    else:
        img = _image(arrays)
        digest, shape = volume_hash(img), tuple(img.shape)
        volume = LabelpropVolume.objects.visible_to(access).filter(hash=digest).first()
        if volume is not None:
            img = None  # already stored
    if "mask" not in arrays:
        raise ValidationFailed.for_field("arrays", "no 'mask' array.")
    mask = _labels(arrays, "mask", shape)
    hints = _labels(arrays, "hints", shape) if "hints" in arrays else None

    options: dict[str, Any] = {
        "z_axis": _int(params, "z_axis", 0, 0, 2),
        "criteria": _choice(params, "criteria", ("distance", "ncc"), "ncc"),
        "reduction": _choice(params, "reduction", ("none", "local_mean", "mean"), "none"),
        "device": _choice(params, "device", DEVICES, "cpu"),
    }
    checkpoint = None
    if kind == LabelpropSessionKind.INFERENCE:
        options["label"] = _int(params, "label", 0, 0, 255)
        name = params.get("checkpoint", "")
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed.for_field(
                "checkpoint", "choose a checkpoint from /list_ckpts (or train one first)."
            )
        checkpoint = _checkpoint(access, name, "checkpoint")
        trained_size = (checkpoint.metadata or {}).get("size", DEFAULT_SIZE)
        options["size"] = _int(params, "shape", int(trained_size), 8, MAX_SIZE)
    else:
        options["label"] = 0
        options["size"] = _int(params, "shape", DEFAULT_SIZE, 8, MAX_SIZE)
        options["max_epochs"] = _int(params, "max_epochs", 10, 1, MAX_EPOCHS)
        options["pretraining"] = _bool(params, "pretraining", False)
        options["name"] = checkpoint_name(params.get("name", ""))
        options["directory"] = selectors.ckpt_dir(access=access)
        pretrained = params.get("pretrained_ckpt") or ""
        if not isinstance(pretrained, str):
            raise ValidationFailed.for_field("pretrained_ckpt", "must be a checkpoint name.")
        if pretrained.strip():
            checkpoint = _checkpoint(access, pretrained, "pretrained_ckpt")
    labels = mask if not options["label"] else np.where(mask == options["label"], mask, 0)
    if not labels.any():
        what = f"label {options['label']}" if options["label"] else "a label"
        raise ValidationFailed.for_field(
            "mask", f"no slice holds {what}: annotate at least one slice."
        )
    return _Plan(digest, img, volume, mask, hints, options, checkpoint)


def _checkpoint(access: ProjectAccess, name: str, field_name: str) -> LabelpropCheckpoint:
    try:
        return selectors.checkpoint_get(access=access, name=name)
    except NotFound:
        raise ValidationFailed.for_field(
            field_name, f"no checkpoint named {name!r} in the checkpoint directory."
        ) from None


# --- starting sessions ---------------------------------------------------------------------------


REFUSAL_MAX_CHARS = 1000


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
    `/download_inference` gives. None when even that row cannot be written (the database is
    down): the caller answers the plain error text."""
    info = {k: v for k, v in (params or {}).items() if k != "hash"}
    error = f"Request refused ({status}): {message}"[:REFUSAL_MAX_CHARS]
    try:
        return LabelpropSession.objects.create(
            project=access.project,
            owner=access.user,
            kind=kind,
            params=info,
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
    arrays: dict[str, np.ndarray],
    params: dict[str, Any],
) -> LabelpropSession:
    """Start an inference or training session: store the volume (once per hash), the mask, the
    session row and its task (enqueued on commit). A request that cannot run is a session
    failed from the start, with the reason as its error and no files."""
    access.require_write()
    info = {k: v for k, v in params.items() if k != "hash"}
    try:
        plan = _plan(access, kind, arrays, params)
    except ValidationFailed as exc:
        return LabelpropSession.objects.create(
            project=access.project,
            owner=access.user,
            kind=kind,
            params=info,
            state=LabelpropSessionState.FAILED,
            error=exc.message,
            finished_at=timezone.now(),
        )
    written: list = []
    try:
        with transaction.atomic():
            volume = plan.volume or _volume_store(access, plan.hash, plan.img, written)
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


def _volume_store(
    access: ProjectAccess, digest: str, img: np.ndarray, written: list
) -> LabelpropVolume:
    """A new volume row and its .npy file (float32); the existing row on a concurrent store."""
    volume = LabelpropVolume(
        project=access.project, owner=access.user, hash=digest, shape=list(img.shape)
    )
    path = storage.volume_path(volume)
    written.append(path)
    volume.size_bytes = storage.save_npy(path, np.asarray(img, dtype=np.float32))
    try:
        with transaction.atomic():
            volume.save(force_insert=True)
    except IntegrityError:
        path.unlink(missing_ok=True)
        return LabelpropVolume.objects.visible_to(access).get(hash=digest)
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
