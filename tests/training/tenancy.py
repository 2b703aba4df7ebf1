"""URL kwargs of the training studio's routes for the cross-tenant test (tests/test_tenancy.py)."""


def _experiment(project, user):
    from apps.training.models import Experiment

    return Experiment.objects.create(project=project, owner=user, name="theirs")


def _run(project, user):
    from apps.tasks.models import Task
    from apps.training.models import Run

    task = Task.objects.create(project=project, owner=user, kind="studio_train", name="theirs")
    return Run.objects.create(
        project=project, owner=user, experiment=_experiment(project, user), task=task
    )


def _evaluation(project, user):
    from apps.training.models import Evaluation

    run = _run(project, user)
    return Evaluation.objects.create(
        project=project, owner=user, experiment=run.experiment, run=run, name="theirs"
    )


URL_KWARGS = {
    "exp_id": lambda project, user: _experiment(project, user).pk,
    "run_id": lambda project, user: _run(project, user).pk,
    "eval_id": lambda project, user: _evaluation(project, user).pk,
}
