"""The marketplace's admin pages: uplet rows are read-only; a stuck pending uplet can be failed."""

import pytest
from django.test import Client

from apps.marketplace.models import Learnuplet
from tests.marketplace.conftest import ZERO_UUID

pytestmark = pytest.mark.django_db


def test_an_admin_fails_a_stuck_pending_learnuplet_and_the_chain_goes_on(
    world, market, compute_orch
):
    first = Learnuplet.objects.get(algo__uuid=market["algo"], rank=0)
    assert (
        compute_orch.post(f"worker/learnuplet/{first.uuid}", {"worker": ZERO_UUID}).status_code
        == 200
    )
    client = Client()
    client.force_login(world.global_admin)
    r = client.get(f"/admin/marketplace/learnuplet/{first.pk}/change/")
    assert r.status_code == 200
    r = client.post(
        "/admin/marketplace/learnuplet/",
        {"action": "mark_failed", "_selected_action": [first.pk]},
        follow=True,
    )
    assert r.status_code == 200
    first.refresh_from_db()
    assert first.status == "failed"
    assert (
        str(Learnuplet.objects.get(algo__uuid=market["algo"], rank=1).model_start) == market["algo"]
    )
