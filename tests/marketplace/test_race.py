"""Two workers racing for one uplet: exactly one wins, the other gets 400, and the winner's
worker and account are the ones recorded."""

import threading

import pytest
from django.db import connection

from apps.core.exceptions import Conflict
from apps.core.tenancy import Role
from apps.marketplace import services
from apps.marketplace.models import Learnuplet, UpletStatus
from tests.factories import add_member, make_user
from tests.marketplace.conftest import Orchestrator, new_uuid


def test_two_sequential_conditional_claims_one_wins(db, world, market):
    uplet = Learnuplet.objects.get(algo__uuid=market["algo"], rank=0)
    stale_a = Learnuplet.objects.get(pk=uplet.pk)  # both workers read it as todo
    stale_b = Learnuplet.objects.get(pk=uplet.pk)
    first, second = new_uuid(), new_uuid()
    services.uplet_claim(uplet=stale_a, worker=first, account=world.owner)
    with pytest.raises(Conflict):
        services.uplet_claim(uplet=stale_b, worker=second, account=world.member)
    uplet.refresh_from_db()
    assert (uplet.status, str(uplet.worker), uplet.claimed_by) == (
        UpletStatus.PENDING,
        first,
        world.owner,
    )


@pytest.mark.django_db(transaction=True)
def test_two_threads_racing_through_http_exactly_one_wins(world, market):
    workers = []
    for i in range(2):
        user = make_user(f"racer{i}", is_service_account=True)
        add_member(world.project, user, Role.MEMBER)
        workers.append(user)
    uplet = Learnuplet.objects.get(algo__uuid=market["algo"], rank=0)
    barrier = threading.Barrier(2)
    answers: dict[str, tuple[int, dict]] = {}

    def race(user):
        try:
            orch = Orchestrator(user.username)
            barrier.wait(timeout=10)
            r = orch.post(f"worker/learnuplet/{uplet.uuid}", {"worker": str(user.pk).zfill(32)})
            answers[user.username] = (r.status_code, r.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(u,)) for u in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    statuses = sorted(code for code, _ in answers.values())
    assert statuses == [200, 400], answers
    [winner] = [name for name, (code, _) in answers.items() if code == 200]
    [loser] = [name for name, (code, _) in answers.items() if code == 400]
    assert answers[winner][1] == {"learnuplet_worker_set": str(uplet.uuid)}
    assert set(answers[loser][1]) == {"Error"}
    uplet.refresh_from_db()
    assert uplet.status == UpletStatus.PENDING and uplet.claimed_by.username == winner
