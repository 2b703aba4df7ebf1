"""URL kwargs of the datasets routes, for the cross-tenant test (tests/test_tenancy.py)."""

import io

from apps.datasets import images as dataset_images
from apps.datasets import imports as dataset_imports
from apps.datasets import services
from apps.datasets import uploads as dataset_uploads
from apps.datasets.models import Dataset
from tests.datasets.conftest import class_zip, idx_bytes, mnist_arrays


def _dataset(project, user):
    images, labels = mnist_arrays(n=4)
    return dataset_imports.dataset_import_mnist(
        project=project,
        actor=user,
        name="tenancy-mnist",
        images=io.BytesIO(idx_bytes(images)),
        labels=io.BytesIO(idx_bytes(labels)),
    )


def _studio_dataset(project, user) -> Dataset:
    existing = Dataset.objects.filter(project=project, name=services.STUDIO_DATASET_NAME).first()
    if existing is not None:
        return existing
    dataset = dataset_images.dataset_import_images_zip(
        project=project, actor=user, file=io.BytesIO(class_zip({"cat": 3, "dog": 3}))
    )
    services.split_create(
        dataset=dataset, name="s", ratios={"train": 0.5, "val": 0.25, "test": 0.25}, seed=1
    )
    return dataset


def _filename(project, user) -> str:
    return _studio_dataset(project, user).items.order_by("filename").first().filename


def _split_index(project, user) -> str:
    return str(_studio_dataset(project, user).splits.get().index)


def _upload(project, user) -> str:
    return str(dataset_uploads.upload_session_create(project=project, actor=user, size=10).pk)


URL_KWARGS = {
    "dataset_id": lambda project, user: str(_dataset(project, user).pk),
    "filename": _filename,
    "split_index": _split_index,
    "upload_id": _upload,
}
