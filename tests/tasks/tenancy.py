from tests.clusters.helpers import make_cluster


def _task(project, user):
    from apps.tasks.models import Task, target_of

    cluster = make_cluster(project, user)
    return Task.objects.create(
        project=project, owner=user, kind="train", name="t", **target_of(cluster)
    )


def _result(project, user):
    import numpy as np

    from apps.clusters.services import request_result_store

    task = _task(project, user)
    task.kind = "request"
    task.save()
    return str(request_result_store(task=task, classes=np.arange(10) % 3).pk)


URL_KWARGS = {
    "task_id": lambda project, user: str(_task(project, user).pk),
    "result_id": _result,
}
