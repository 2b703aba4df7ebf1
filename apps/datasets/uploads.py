"""Writes of upload sessions and of the datasets made from them (pending, finalize)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Project, User
from apps.core.exceptions import (
    Conflict,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
    disk_full,
)
from apps.core.locks import alive
from apps.datasets.images import dataset_import_images_zip
from apps.datasets.imports import parse_csv, parse_volume
from apps.datasets.mnist import parse_mnist
from apps.datasets.models import Dataset, UploadSession
from apps.datasets.services import dataset_discard
from apps.datasets.storage import (
    CHUNK,
    dir_size,
    display_name,
    parsed_fields,
    publish,
    staging_dir,
    upload_sessions_max_open,
    validate_name,
)

logger = logging.getLogger(__name__)

# -- upload sessions --------------------------------------------------------------------------


def upload_session_create(
    *, project: Project, actor: User, size: int, filename: str = ""
) -> UploadSession:
    """Open an upload of `size` bytes; the file is preallocated and filled by offset writes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValidationFailed.for_field("size", "must be a positive integer.")
    if size > settings.UPLOAD_MAX_BYTES:
        raise PayloadTooLarge(f"Uploads are limited to {settings.UPLOAD_MAX_BYTES} bytes.")
    limit = upload_sessions_max_open()
    with transaction.atomic():
        # The user's row is locked so that concurrent opens cannot both pass the count.
        User.objects.select_for_update().filter(pk=actor.pk).first()
        held = upload_sessions_open(actor).count()
        if held >= limit:
            raise PayloadTooLarge(
                f"You already have {held} open upload sessions, the limit "
                f"UPLOAD_SESSIONS_MAX_OPEN={limit}: turn them into datasets or delete them "
                "(DELETE on the upload) first.",
                details={"limit": "UPLOAD_SESSIONS_MAX_OPEN", "max": limit},
            )
        session = UploadSession.objects.create(
            project=project, owner=actor, size=size, filename=display_name(filename)
        )
    try:
        with open(session.path, "wb") as fh:
            fh.truncate(size)
    except BaseException:
        UploadSession.objects.filter(pk=session.pk).delete()
        session.path.unlink(missing_ok=True)
        raise
    return session


def upload_sessions_open(user: User):
    """The user's upload sessions whose file is still held: not yet part of a ready dataset
    (sessions of a ready dataset had their file removed when it was parsed)."""
    return UploadSession.objects.filter(owner=user).exclude(dataset__status=Dataset.Status.READY)


def upload_session_delete(*, session: UploadSession) -> None:
    """Delete an upload and its file; one bound to a dataset still being uploaded is kept."""
    if session.dataset_id is not None:
        status = Dataset.objects.filter(pk=session.dataset_id).values_list("status", flat=True)
        if status.first() == Dataset.Status.UPLOADING:
            raise Conflict(
                f"Upload {session.pk} belongs to a dataset being uploaded; delete the dataset."
            )
    path = session.path
    session.delete()
    path.unlink(missing_ok=True)


def _check_writable(session: UploadSession) -> None:
    """Bytes go only into an upload whose file is still waiting for them: not one that was
    already turned into a dataset (its file was parsed and removed)."""
    if session.dataset_id is not None:
        status = Dataset.objects.filter(pk=session.dataset_id).values_list("status", flat=True)
        if status.first() != Dataset.Status.UPLOADING:
            raise Conflict(
                f"Upload {session.pk} was already turned into a dataset; it takes no more bytes."
            )
    if not session.path.exists():
        raise Conflict(f"Upload {session.pk} has no file any more; open a new upload.")


def _check_range(session: UploadSession, position: int, length: int) -> None:
    if not isinstance(position, int) or position < 0:
        raise ValidationFailed.for_field("position", "must be a non-negative integer.")
    if position + length > session.size:
        raise ValidationFailed.for_field(
            "position",
            f"bytes {position}..{position + length} lie outside the declared size {session.size}.",
        )


def _record_range(session: UploadSession, start: int, end: int) -> UploadSession:
    if end <= start:
        return session
    with transaction.atomic():
        locked = UploadSession.objects.select_for_update().get(pk=session.pk)
        ranges = sorted([*map(tuple, locked.ranges), (start, end)])
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        locked.ranges = merged
        locked.received_bytes = sum(hi - lo for lo, hi in merged)
        locked.save(update_fields=["ranges", "received_bytes", "updated_at"])
    return locked


def upload_session_write(*, session: UploadSession, position: int, data: bytes) -> UploadSession:
    """Write one chunk at `position`; chunks may come in any order and re-sends are harmless."""
    _check_range(session, position, len(data))
    _check_writable(session)
    with open(session.path, "r+b") as fh:
        fh.seek(position)
        fh.write(data)
    return _record_range(session, position, position + len(data))


def upload_session_write_stream(
    *, session: UploadSession, position: int, stream, length: int | None = None
) -> UploadSession:
    """Write a request body at `position` chunk by chunk, never holding it whole in memory.

    A body that brings no bytes, or fewer than its declared `length`, is refused: the answer
    never says a chunk was stored when nothing was."""
    _check_range(session, position, length or 0)
    _check_writable(session)
    written = 0
    with open(session.path, "r+b") as fh:
        fh.seek(position)
        while True:
            chunk = stream.read(CHUNK) if stream is not None else b""
            if not chunk:
                break
            _check_range(session, position, written + len(chunk))
            fh.write(chunk)
            written += len(chunk)
    if written == 0:
        raise ValidationFailed.for_field(
            "body",
            "the chunk is empty: send its bytes as the request body with a Content-Length "
            "(a body without a length is not read).",
        )
    if length and written != length:
        raise ValidationFailed.for_field(
            "body", f"the body ended after {written} of the {length} bytes it declared."
        )
    return _record_range(session, position, position + written)


def upload_session_progress(session: UploadSession) -> dict:
    """The progress answer of an upload: `{uuid, complete, received_bytes, size}`."""
    return {
        "uuid": str(session.pk),
        "complete": session.complete,
        "received_bytes": session.received_bytes,
        "size": session.size,
    }


def upload_session_finalize(*, session: UploadSession) -> UploadSession:
    """Check that every byte of an upload arrived (before it is parsed into a dataset)."""
    if not session.complete:
        raise ValidationFailed.for_field(
            "uploads",
            f"upload {session.pk} is incomplete: {session.received_bytes} of {session.size} "
            "bytes received.",
        )
    if not session.path.exists():
        raise NotFound("Upload file not found.")
    return session


_UPLOAD_ROLES = {
    Dataset.Kind.MNIST: ({"images", "labels"}, set()),
    Dataset.Kind.CSV: ({"file"}, set()),
    Dataset.Kind.VOLUME: ({"file"}, {"labels"}),
    Dataset.Kind.IMAGES: ({"file"}, set()),
}


@transaction.atomic
def dataset_create_pending(
    *,
    project: Project,
    actor: User,
    name: str,
    kind: str,
    uploads: dict[str, UploadSession],
    options: dict | None = None,
    origin: str = "",
) -> Dataset:
    """Create a dataset in status "uploading" bound to its upload sessions (per role: MNIST
    `images`+`labels`, CSV `file`, volume `file` and optional `labels`, images `file`).

    `origin="from-uploads"` marks a dataset made and finalized in one call: if that call's
    process died half-way, the dataset stays behind "uploading" with the uploads bound to it; a
    retry with the same uploads or name discards it (the uploads are kept) instead of answering
    409 for ever."""
    if kind not in _UPLOAD_ROLES:
        raise ValidationFailed.for_field("kind", f"must be one of {', '.join(_UPLOAD_ROLES)}.")
    required, optional = _UPLOAD_ROLES[kind]
    given = set(uploads)
    if not required <= given or given - required - optional:
        raise ValidationFailed.for_field(
            "uploads",
            f"a {kind} dataset needs the uploads {', '.join(sorted(required))}"
            + (f" (optionally {', '.join(sorted(optional))})" if optional else "")
            + f"; got {', '.join(sorted(given)) or 'none'}.",
        )
    sessions = list(uploads.values())
    if len({s.pk for s in sessions}) != len(sessions):
        raise ValidationFailed.for_field("uploads", "each role needs its own upload.")
    for session in sessions:
        if session.project_id != project.pk:
            raise NotFound("Upload not found.")
        session.refresh_from_db(fields=["dataset"])  # a reclaim below may have freed it
        if session.dataset_id is not None:
            _reclaim_abandoned(
                session.dataset, f"Upload {session.pk} already belongs to a dataset."
            )
    same_name = Dataset.objects.filter(project=project, name=(name or "").strip()).first()
    if same_name is not None:
        _reclaim_abandoned(same_name, None)
    name = validate_name(project, name)
    dataset = Dataset.objects.create(
        project=project,
        owner=actor,
        name=name,
        kind=kind,
        status=Dataset.Status.UPLOADING,
        metadata={"options": options or {}, "origin": origin},
    )
    for role, session in uploads.items():
        UploadSession.objects.filter(pk=session.pk).update(dataset=dataset, role=role)
    return dataset


FROM_UPLOADS = "from-uploads"


def _finalize_lock(dataset: Dataset):
    return alive(f"dataset-finalize:{dataset.pk}")


def _reclaim_abandoned(dataset: Dataset, conflict: str | None) -> None:
    """Discard `dataset` if it is a one-call ("from-uploads") dataset whose call died before it
    finished (nobody holds its finalize lock); otherwise answer Conflict (`conflict`, or the
    name's own message when None)."""
    unfinished = dataset.status in (Dataset.Status.UPLOADING, Dataset.Status.FAILED)
    if unfinished and (dataset.metadata or {}).get("origin") == FROM_UPLOADS:
        with _finalize_lock(dataset) as free:
            if free:
                dataset_discard(dataset=dataset)
                return
        raise Conflict(f"Dataset {dataset.name!r} is still being created from its uploads.")
    if conflict is not None:
        raise Conflict(conflict)


def _mark_failed(dataset: Dataset, message: str) -> None:
    Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.FAILED, error=message)
    dataset.status, dataset.error = Dataset.Status.FAILED, message


def dataset_finalize_upload(*, dataset: Dataset) -> Dataset:
    """Parse the uploaded files of a pending dataset, store its arrays and mark it ready.

    On bad input the dataset is marked failed with the reason and ValidationFailed is raised
    (PayloadTooLarge for a limit); on any other error it is marked failed too.
    """
    with _finalize_lock(dataset) as mine:
        if not mine:
            raise Conflict(f"Dataset {dataset.name!r} is already being created from its uploads.")
        return _finalize_upload(dataset)


def _deleted_meanwhile(dataset: Dataset) -> NotFound:
    return NotFound(f"Dataset {dataset.name!r} was deleted while it was being created.")


def _finalize_upload(dataset: Dataset) -> Dataset:
    if dataset.status != Dataset.Status.UPLOADING:
        raise Conflict(f"Dataset {dataset.name!r} is {dataset.status}, not uploading.")
    sessions = {s.role: s for s in dataset.uploads.all()}
    options = (dataset.metadata or {}).get("options") or {}
    # An upload still arriving is not a failure: the dataset stays "uploading", so the client
    # sends the rest and finalizes again.
    for session in sessions.values():
        if not session.complete:
            upload_session_finalize(session=session)  # ValidationFailed naming what is missing
    try:
        for session in sessions.values():
            upload_session_finalize(session=session)
        with staging_dir(dataset.project_id) as staging:
            kind = dataset.kind
            if kind == Dataset.Kind.IMAGES:
                with open(sessions["file"].path, "rb") as fh:
                    imported = dataset_import_images_zip(
                        project=dataset.project, actor=dataset.owner, file=fh, dataset=dataset
                    )
                Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.READY, error="")
                imported.refresh_from_db()
                dataset = imported
            else:
                _parse_and_store(dataset, sessions, options, staging)
    except Dataset.DoesNotExist:
        raise _deleted_meanwhile(dataset) from None
    except (ValidationFailed, NotFound, Conflict, PayloadTooLarge) as exc:
        _mark_failed(dataset, exc.message)
        if isinstance(exc, ValidationFailed | PayloadTooLarge):
            raise  # a limit keeps its 413 (the message names the setting)
        raise ValidationFailed(exc.message, details={"uploads": [exc.message]}) from None
    except Exception as exc:
        if not Dataset.objects.filter(pk=dataset.pk).exists():  # its files went with it
            raise _deleted_meanwhile(dataset) from None
        # Never leave the row "uploading": whatever broke, the dataset failed (the uploads are
        # kept, so the same call can be retried once there is room).
        if disk_full(exc):
            _mark_failed(dataset, InsufficientStorage.default_message)
        else:
            _mark_failed(dataset, "Internal error while parsing the uploads.")
        raise
    for session in sessions.values():
        session.path.unlink(missing_ok=True)
    _announce_ready(dataset)
    return dataset


def _announce_ready(dataset: Dataset) -> None:
    """`signals.dataset_ready`, once committed (the marketplace runs uplets that waited for it);
    a receiver's failure is logged: the dataset is ready whatever its followers do."""
    from apps.datasets.signals import dataset_ready

    def send() -> None:
        for receiver, result in dataset_ready.send_robust(sender=Dataset, dataset=dataset):
            if isinstance(result, Exception):
                logger.error("dataset %s ready: %r failed", dataset.pk, receiver, exc_info=result)

    transaction.on_commit(send)


def _parse_and_store(dataset: Dataset, sessions: dict, options: dict, staging) -> None:
    """Parse the uploads of an array dataset (MNIST, CSV, volume) into `staging`, then store the
    arrays and mark it ready in one step."""
    kind = dataset.kind
    if kind == Dataset.Kind.MNIST:
        parsed = parse_mnist(sessions["images"].path, sessions["labels"].path, staging)
    elif kind == Dataset.Kind.CSV:
        parsed = parse_csv(
            sessions["file"].path,
            options.get("label_column"),
            options.get("input_columns"),
            staging,
        )
    else:
        labels = sessions.get("labels")
        parsed = parse_volume(sessions["file"].path, labels.path if labels else None, staging)
    parsed.metadata = {**parsed.metadata, "options": options}
    with transaction.atomic():
        # Deleted while its uploads were parsed: the delete wins (a plain save of the stale
        # object would insert the row again and publish its files).
        if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
            raise Dataset.DoesNotExist
        for key, value in parsed_fields(parsed).items():
            setattr(dataset, key, value)
        dataset.size_bytes = dir_size(staging)
        dataset.status, dataset.error = Dataset.Status.READY, ""
        dataset.save(force_update=True)
        publish(staging, dataset)


def dataset_upload_begin(
    *, project: Project, actor: User, name: str, kind: str, sizes: dict[str, int]
) -> tuple[Dataset, dict[str, UploadSession]]:
    """Begin a dataset whose files come later (the Hanami SDK's two-step upload): a pending
    dataset with one upload session per role of the given size. Nothing is created when one step
    fails, and no session file is left behind; finish with `dataset_finalize_upload`."""
    sessions: dict[str, UploadSession] = {}
    try:
        with transaction.atomic():
            for role, size in sizes.items():
                sessions[role] = upload_session_create(
                    project=project, actor=actor, size=size, filename=f"{name}-{role}"
                )
            dataset = dataset_create_pending(
                project=project, actor=actor, name=name, kind=kind, uploads=sessions
            )
    except BaseException:
        for session in sessions.values():
            session.path.unlink(missing_ok=True)
        raise
    return dataset, sessions
