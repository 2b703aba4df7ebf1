"""A train task does not keep a private copy of its dataset beside the memory map (a 60k-sample
task went from 460 to 820 MiB of worker memory): in-range inputs are mapped copy-on-write."""

import io
import tracemalloc

import numpy as np
import pytest
import torch

from apps.clusters.training import scaled_rows as _scaled


def _stored(tmp_path, array):
    path = tmp_path / "inputs.npy"
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def test_in_range_inputs_are_mapped_not_copied(tmp_path):
    x = _stored(tmp_path, np.random.default_rng(0).random((50, 4, 4), dtype=np.float32))
    rows = _scaled(x, 1.0)
    assert isinstance(rows, np.memmap) and rows.base is not None
    assert rows.shape == (50, 16) and np.array_equal(rows, np.asarray(x).reshape(50, 16))
    assert rows.flags.writeable  # torch gets a writable tensor; nothing reaches the file
    rows[0, 0] = 42.0
    assert np.load(tmp_path / "inputs.npy")[0, 0, 0] != 42.0


def test_slices_and_other_scales_are_copies_with_the_right_rows(tmp_path):
    source = np.arange(60, dtype=np.float32).reshape(10, 6)
    x = _stored(tmp_path, source)
    part = _scaled(x[4:10], 1.0)  # a slice keeps its parent's offset: must not be re-mapped
    assert not isinstance(part, np.memmap) and np.array_equal(part, source[4:10])
    scaled = _scaled(x, 0.5)
    assert np.array_equal(scaled, source * 0.5)


@pytest.mark.django_db(transaction=True)
def test_a_uint8_dataset_trains_batch_by_batch_to_the_weights_of_a_float32_copy(
    world, stub_worker, monkeypatch
):
    """MNIST stays uint8 (a quarter of the bytes): the train task gives `fit` the map and its
    scale, no float32 array of the whole set is made, and the weights are those a float32 copy
    (what the task built before) trains."""
    import ml.training
    from apps.clusters import runtime
    from apps.clusters.services import cluster_task_create
    from apps.datasets.imports import dataset_import_mnist
    from ml.data import StoredInputs
    from tests.clusters.helpers import make_cluster, template
    from tests.datasets.conftest import idx_bytes
    from tests.tasks.conftest import wait_state
    from tests.tasks.test_templates_mnist import blob_digits

    n = 3000
    images, labels = blob_digits(n, seed=0)
    dataset = dataset_import_mnist(
        project=world.project,
        actor=world.owner,
        name="pixels",
        images=io.BytesIO(idx_bytes(images)),
        labels=io.BytesIO(idx_bytes(labels)),
    )
    fit, given, convert = ml.training.fit, [], []

    def recording_fit(model, x, y, config, **kwargs):
        given.append(x)
        if convert:
            x = x.as_float32()
        return fit(model, x, y, config, **kwargs)

    monkeypatch.setattr(ml.training, "fit", recording_fit)

    def train(name: str):
        cluster = make_cluster(world.project, world.member, name, template(784, 16, 10))
        task = cluster_task_create(
            project=world.project,
            actor=world.member,
            kind="train",
            name=name,
            cluster=cluster,
            dataset=dataset,
            params={"epochs": 1},
        )
        done = wait_state(str(task.pk))
        assert done.state == "finished", done.error
        return runtime.cluster_load_model(cluster).state_dict()

    convert.append(True)
    copied = train("copied")  # also imports what a task needs, before the count
    convert.clear()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        batchwise = train("batchwise")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(given[1], StoredInputs) and given[1].values.dtype == np.uint8
    assert peak - start < n * 784 * 4  # no float32 copy of the set (9.4 MB)
    for name, value in batchwise.items():
        assert torch.equal(value, copied[name]), name
