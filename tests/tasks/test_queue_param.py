"""Tasks without a cluster may name their host queue; it must be an available host (the clusters
app checks it: the engine knows no hosts)."""

import pytest

from apps.clusters.models import Host
from apps.clusters.services import host_queue_check
from apps.core.exceptions import ValidationFailed
from apps.tasks.registry import register
from apps.tasks.services import task_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _kind():
    register("noop-queue", lambda ctx: None)


def test_queue_must_be_an_available_host(world):
    def create(queue):
        return task_create(
            project=world.project,
            actor=world.member,
            kind="noop-queue",
            name="n",
            queue=host_queue_check(queue),
        )

    assert create(None).queue == "cpu"
    with pytest.raises(ValidationFailed):
        create("gpu-0")
    Host.objects.create(pk="gpu-0", kind="gpu", name="GPU", state="unavailable")
    with pytest.raises(ValidationFailed):
        create("gpu-0")
    Host.objects.filter(pk="gpu-0").update(state="available")
    assert create("gpu-0").queue == "gpu-0"
