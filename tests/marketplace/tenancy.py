"""URL kwargs of the marketplace routes (main API and `/orchestrator/`), for the cross-tenant
test (tests/test_tenancy.py). Every object is built through the services, in the victim's
project, with external algos and data (no built-in compute job)."""

import uuid

from apps.core.tenancy import project_access
from apps.marketplace import services
from apps.marketplace.models import Learnuplet


def _access(project, user):
    return project_access(user=user, project_id=project.pk)


def _problem(project, user, train: int = 2):
    access = _access(project, user)
    test = str(uuid.uuid4())
    problem = services.problem_create(
        access=access,
        uuid=str(uuid.uuid4()),
        workflow=str(uuid.uuid4()),
        test_dataset=[test],
        size_train_dataset=1,
    )
    data = [str(uuid.uuid4()) for _ in range(train)] + [test]
    services.data_create(access=access, uuids=data, problem_uuids=[str(problem.uuid)])
    return access, problem


def _algo(project, user):
    access, problem = _problem(project, user)
    algo, _ = services.algo_create(
        access=access, uuid=str(uuid.uuid4()), name="victim-algo", problem_uuid=str(problem.uuid)
    )
    return access, algo


def _learnuplet(project, user) -> str:
    _, algo = _algo(project, user)
    return str(algo.learnuplets.get(rank=0).uuid)


def _data(project, user) -> str:
    access, problem = _problem(project, user, train=0)
    rows, _ = services.data_create(
        access=access, uuids=[str(uuid.uuid4())], problem_uuids=[str(problem.uuid)]
    )
    return str(rows[0].uuid)


def _preduplet(project, user) -> str:
    access, algo = _algo(project, user)
    uplet = Learnuplet.objects.get(algo=algo, rank=0)
    services.uplet_claim(uplet=uplet, worker=str(uuid.uuid4()), account=user)
    services.learnuplet_report(uplet=uplet, account=user, status="done", perf=0.5)
    preduplet = services.prediction_create(
        access=access, data=[str(uuid.uuid4())], problem_uuid=str(algo.problem.uuid)
    )
    return str(preduplet.uuid)


def _push(project, user) -> str:
    """A failed push of the victim's project (its compute API was refused)."""
    from apps.marketplace.models import ComputeEndpoint, ComputePush, PushState

    ComputeEndpoint.objects.get_or_create(
        project=project, defaults={"url": "http://compute.invalid:8000", "owner": user}
    )
    _learnuplet(project, user)
    push = ComputePush.objects.filter(project=project).latest("id")
    ComputePush.objects.filter(pk=push.pk).update(state=PushState.FAILED)
    return str(push.pk)


URL_KWARGS = {
    "push_id": _push,
    "problem_uuid": lambda project, user: str(_problem(project, user)[1].uuid),
    "algo_uuid": lambda project, user: str(_algo(project, user)[1].uuid),
    "data_uuid": _data,
    "learnuplet_uuid": _learnuplet,
    "preduplet_uuid": _preduplet,
}
