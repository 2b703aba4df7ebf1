"""A studio run keeps its inputs as stored (uint8 MNIST pixels, image caches) and `fit` converts
each batch: the numbers are those of the float32 copies the run built before (scaled by the
run's input scale, then normalised)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from apps.training import data
from apps.training.handlers import _load_training_data
from ml.data import StoredInputs, input_scale

NORMALIZE = {"mean": [0.2], "std": [0.3]}


def _copies(dataset, input_size, rows, scale=None, normalize=NORMALIZE):
    """The float32 copy of `rows` the run made before: scale (found on the train rows), then
    normalise, in place."""
    subset = data.load_subset(dataset, input_size=input_size, indices=rows)
    found = input_scale(subset.x) if scale is None else scale
    subset.x *= np.float32(found)
    data.normalize(subset.x, normalize.get("mean"), normalize.get("std"))
    return subset, found


@pytest.mark.django_db
def test_mnist_and_its_validation_set_stay_uint8(world, small_digits):
    train_set, val_set = small_digits
    input_size = [1, 8, 8]
    run = SimpleNamespace(project_id=world.project.pk)
    config = {
        "dataset_id": train_set.pk,
        "val_dataset_id": val_set.pk,
        "input_size": input_size,
        "normalize": NORMALIZE,
    }
    train, val, scale = _load_training_data(run, config)
    assert isinstance(train.x, StoredInputs) and train.x.values.dtype == np.uint8
    assert isinstance(val.x, StoredInputs) and val.x.values.dtype == np.uint8
    before, found = _copies(train_set, input_size, np.arange(300))
    before_val, _ = _copies(val_set, input_size, np.arange(100), scale=found)
    assert scale == found == 1.0
    assert np.array_equal(train.x.as_float32(), before.x)
    assert np.array_equal(val.x.as_float32(), before_val.x)
    assert np.array_equal(train.y, before.y) and len(train.x) == 300


@pytest.mark.django_db
def test_a_split_image_set_gives_the_numbers_of_its_copies(world, image_set):
    from apps.datasets.models import Split

    split = Split.objects.get(dataset=image_set)
    input_size = [1, 8, 8]
    run = SimpleNamespace(project_id=world.project.pk)
    config = {
        "dataset_id": image_set.pk,
        "split_id": split.pk,
        "input_size": input_size,
        "normalize": NORMALIZE,
    }
    train, val, scale = _load_training_data(run, config)
    rows = data.subset_indices(image_set, split, "train")
    before, found = _copies(image_set, input_size, rows)
    before_val, _ = _copies(
        image_set, input_size, data.subset_indices(image_set, split, "val"), scale=found
    )
    assert scale == found
    assert np.array_equal(train.x.as_float32(), before.x)
    assert np.array_equal(val.x.as_float32(), before_val.x)
    assert np.array_equal(train.indices, rows)
