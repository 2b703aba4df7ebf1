"""The MNIST pair of idx files (images 0x0803, labels 0x0801): its rules, and reading it in one
pass per file, either from files (paths, uploads, upload sessions: `parse_mnist`) or while a
multipart request arrives (`streamed_upload`: an upload handler feeds each received chunk to an
`idx.IdxFeed`, so the file never becomes a Django temporary file or a whole-file buffer).

Inputs are stored `(N, rows*cols)` in the images' own dtype (native byte order; uint8 pixels stay
uint8, a quarter of float32's bytes; `dataset_arrays` converts them to float32 on read), labels
as int64.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers

from apps.accounts.models import Project
from apps.core.exceptions import ValidationFailed
from apps.core.safeio import writable_npy
from apps.datasets import idx
from apps.datasets.storage import Parsed, idx_max_bytes, staging_dir

FIELDS = ("images", "labels")
SETTING = "DATASET_IDX_MAX_BYTES"
_NDIM = {"images": (3,), "labels": (1,)}
_LABELS_SOURCE = "labels-source.npy"  # the labels as they came, until they are checked

# -- the rules of the pair --------------------------------------------------------------------


def check_images(head: idx.IdxHeader) -> None:
    n, rows, cols = head.dims
    if n == 0:
        raise ValidationFailed.for_field("images", "the file holds no images.")
    if rows * cols == 0:
        raise ValidationFailed.for_field("images", "the images have no pixels.")


def check_labels(header: idx.IdxHeader) -> None:
    if header.dtype.kind not in "iu":
        raise ValidationFailed.for_field("labels", "labels must be integers (idx magic 0x0801).")


def check_counts(labels: idx.IdxHeader, images: idx.IdxHeader) -> None:
    count, n = labels.count, images.dims[0]
    if count != n:
        raise ValidationFailed(
            f"labels: {count} labels for {n} images.",
            details={"labels": [f"{count} labels for {n} images; counts must match."]},
        )


def stored_pair(head: idx.IdxHeader, y: np.ndarray, staging: Path) -> Parsed:
    """Check the label values, store them as int64 `labels.npy` next to the already written
    `inputs.npy`, and describe the dataset."""
    if int(y.min()) < 0 or int(y.max()) > 255:
        raise ValidationFailed.for_field("labels", "labels must lie within 0..255.")
    np.save(staging / "labels.npy", y.astype(np.int64))
    n, rows, cols = head.dims
    top = int(y.max())
    num_classes = 10 if top <= 9 else top + 1
    return Parsed(
        num_samples=int(n),
        input_shape=[int(rows * cols)],
        num_classes=num_classes,
        class_names=[str(i) for i in range(num_classes)],
        label_shape=[],
        metadata={
            "rows": int(rows),
            "cols": int(cols),
            "source_dtype": str(head.dtype.newbyteorder("=")),
        },
    )


def _inputs_file(head: idx.IdxHeader, staging: Path) -> np.ndarray:
    n, rows, cols = head.dims
    dtype = head.dtype.newbyteorder("=")
    return writable_npy(staging / "inputs.npy", dtype=dtype, shape=(n, rows * cols))


# -- from files -------------------------------------------------------------------------------


def parse_mnist(images, labels, staging: Path) -> Parsed:
    """One pass per file from the files to the stored arrays: the images header is checked,
    then the labels are read (their count must match), then the image bytes go straight into a
    memory-mapped `inputs.npy`."""
    limit = idx_max_bytes()
    head = idx.idx_header(
        images, field="images", expect_ndim=(3,), max_bytes=limit, setting_name=SETTING
    )
    check_images(head)

    def label_array(header: idx.IdxHeader) -> np.ndarray:
        check_labels(header)
        check_counts(header, head)
        return np.empty(header.count, dtype=header.dtype.newbyteorder("="))

    y = idx.stream_idx(
        labels,
        field="labels",
        expect_ndim=(1,),
        max_bytes=limit,
        setting_name=SETTING,
        allocate=label_array,
    )

    def inputs_file(header: idx.IdxHeader) -> np.ndarray:
        if header != head:
            raise ValidationFailed.for_field("images", "the file changed while it was read.")
        return _inputs_file(head, staging)

    x = idx.stream_idx(
        images,
        field="images",
        expect_ndim=(3,),
        max_bytes=limit,
        setting_name=SETTING,
        allocate=inputs_file,
    )
    del x
    return stored_pair(head, y, staging)


# -- while a multipart request arrives --------------------------------------------------------


class StreamedIdx(UploadedFile):
    """An `images` or `labels` file field already parsed into the staging directory by
    `MnistUploadHandler` (what `request.data` holds for it instead of a Django upload)."""

    def __init__(
        self, *, name: str, size: int, content_type: str, feed: idx.IdxFeed | None, staging: Path
    ):
        super().__init__(file=None, name=name, content_type=content_type, size=size)
        self.feed = feed  # None for an empty file (the serializer refuses it)
        self.staging = staging

    def open(self, mode=None):
        raise ValueError("A streamed idx file was parsed as it arrived; it cannot be reopened.")

    def close(self) -> None:  # Django closes the request's files when the response is done
        self.feed = None


class MnistUploadHandler(FileUploadHandler):
    """Feeds the chunks of the `images` and `labels` file fields into one `idx.IdxFeed` each, in
    whichever order they arrive (the labels may come first): the images into the staging
    directory's `inputs.npy`, the labels into a memory-mapped file beside it. Whichever header
    comes second is checked against the first (counts). Other file fields pass on to Django's
    handlers (the serializer refuses them)."""

    def __init__(self, request, *, staging: Path) -> None:
        super().__init__(request)
        self.staging = staging
        self.feeds: dict[str, idx.IdxFeed] = {}
        self.current: idx.IdxFeed | None = None

    def new_file(self, field_name, *args, **kwargs) -> None:
        super().new_file(field_name, *args, **kwargs)
        self.current = None
        if field_name not in FIELDS:
            return
        if field_name in self.feeds:
            raise ValidationFailed.for_field(field_name, "give one file.")
        self.current = self.feeds[field_name] = idx.IdxFeed(
            field=field_name,
            expect_ndim=_NDIM[field_name],
            max_bytes=idx_max_bytes(),
            setting_name=SETTING,
            allocate=self._images if field_name == "images" else self._labels,
        )
        raise StopFutureHandlers

    def receive_data_chunk(self, raw_data, start):
        if self.current is None:
            return raw_data
        self.current.feed(raw_data)
        return None

    def file_complete(self, file_size):
        feed, self.current = self.current, None
        if feed is None:
            return None
        if feed.received:
            feed.close()
        return StreamedIdx(
            name=self.file_name,
            size=feed.received,
            content_type=self.content_type,
            feed=feed if feed.received else None,
            staging=self.staging,
        )

    def _other(self, field: str) -> idx.IdxHeader | None:
        feed = self.feeds.get(field)
        return feed.header if feed is not None else None

    def _images(self, head: idx.IdxHeader) -> np.ndarray:
        check_images(head)
        labels = self._other("labels")
        if labels is not None:
            check_counts(labels, head)
        return _inputs_file(head, self.staging)

    def _labels(self, header: idx.IdxHeader) -> np.ndarray:
        check_labels(header)
        images = self._other("images")
        if images is not None:
            check_counts(header, images)
        dtype = header.dtype.newbyteorder("=")
        if header.count == 0:  # nothing to map; the counts' check answers it
            return np.empty(0, dtype=dtype)
        return writable_npy(self.staging / _LABELS_SOURCE, dtype=dtype, shape=(header.count,))


@contextmanager
def streamed_upload(request, project: Project) -> Iterator[None]:
    """Within the block, `request.data` parses the multipart `images` and `labels` as they arrive
    into a staging directory of `project` (`dataset_import_mnist` publishes it); whatever was
    written is removed when the block ends without that. A request whose body was already read
    (e.g. by a CSRF check) keeps Django's uploads and the file path."""
    django_request = getattr(request, "_request", request)
    with staging_dir(project.pk) as staging:
        with suppress(AttributeError):  # "cannot set the upload handlers after..."
            django_request.upload_handlers = [
                MnistUploadHandler(django_request, staging=staging),
                *django_request.upload_handlers,
            ]
        yield


def streamed_pair(images, labels) -> tuple[Parsed, Path] | None:
    """The parsed pair and its staging directory when both files were streamed, else None."""
    if not (isinstance(images, StreamedIdx) and isinstance(labels, StreamedIdx)):
        return None
    image_feed, label_feed = images.feed, labels.feed
    assert image_feed is not None and label_feed is not None  # the serializer refuses empty files
    assert image_feed.header is not None and label_feed.header is not None
    assert image_feed.out is not None and label_feed.out is not None
    staging = images.staging
    check_counts(label_feed.header, image_feed.header)
    parsed = stored_pair(image_feed.header, label_feed.out, staging)
    image_feed.out = label_feed.out = None  # unmapped before the directory is published
    images.close()
    labels.close()
    (staging / _LABELS_SOURCE).unlink(missing_ok=True)
    return parsed, staging
