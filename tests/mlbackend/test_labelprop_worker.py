"""The labelprop client's whole loop through the real job engine: /training answers a token at
once, the task is enqueued on commit and run by a Dramatiq worker (stub broker), the client
polls /get_session_list until its token appears and downloads the npz; then /inference with
the checkpoint it trained, sending only the mask (the volume is known by its hash)."""

import numpy as np
import pytest

from apps.mlbackend.models import LabelpropSession
from tests.mlbackend.labelprop_helpers import Napari, enable, load_npz, md5, small_volume
from tests.tasks.conftest import stub_broker, stub_worker, wait_for, wait_state  # noqa: F401


@pytest.mark.django_db(transaction=True)
def test_train_then_infer_on_a_worker(world, settings, stub_worker):  # noqa: F811
    enable(settings, world.project)
    napari = Napari()
    img, _labels, mask = small_volume()

    token = napari.training(img, mask, shape=32, max_epochs=2, checkpoint_name="w").content
    token = token.decode()
    wait_for(lambda: napari.session_exists(token), timeout=120)
    session = LabelpropSession.objects.get(pk=token)
    # The results are written (and listed) just before the handler returns and the task ends.
    task = wait_state(session.task_id, timeout=60)
    assert session.state == "finished" and task.state == "finished", task.error
    trained = load_npz(b"".join(napari.download(token).streaming_content))
    assert trained["Y_fused"].shape == img.shape
    assert napari.list_ckpts() == ["w.ckpt"] and napari.list_hash() == [md5(img)]

    second = napari.inference(img, mask, checkpoint="w.ckpt").content.decode()
    wait_for(lambda: napari.session_exists(second), timeout=120)
    result = load_npz(b"".join(napari.download(second).streaming_content))
    np.testing.assert_array_equal(result["Y_fused"], trained["Y_fused"])
