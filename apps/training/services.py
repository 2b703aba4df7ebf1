"""Writes of the training studio: experiments (validated configurations), runs (start, stop,
resume, delete) and evaluations.

A run is a `studio_train` task of the job engine on a cluster created for it; its handler lives in
`apps.training.handlers`. Configurations that cannot work are refused when they are written (and
again when a run starts, since the data may have changed) with VALIDATION_ERROR naming the field;
those checks live in `apps.training.validation`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.core.exceptions import Conflict, TrainingInProgress, ValidationFailed
from apps.core.storage import project_local_dir
from apps.core.tenancy import ProjectAccess
from apps.datasets.models import Dataset, Split
from apps.tasks.models import PENDING_STATES, Task
from apps.training import data as training_data
from apps.training.exceptions import CheckpointNotFound
from apps.training.models import Evaluation, Experiment, Run
from apps.training.validation import (
    CONFIG_FIELDS,
    _current_values,
    experiment_validate,
    run_preprocessing,
)

if TYPE_CHECKING:
    from apps.accounts.models import User


TRAIN_KIND = "studio_train"
EVALUATE_KIND = "studio_evaluate"


# --- storage -------------------------------------------------------------------------------------


def run_dir(run: Run) -> Path:
    """The run's private files (its resume state) under the project's prefix."""
    return project_local_dir(str(run.project_id), "training", "runs", str(run.pk))


def evaluation_dir(evaluation: Evaluation) -> Path:
    """The evaluation's per-item NumPy arrays under the project's prefix."""
    return project_local_dir(str(evaluation.project_id), "training", "evaluations", evaluation.pk)


def _remove_tree_on_commit(path: Path) -> None:
    transaction.on_commit(lambda: shutil.rmtree(path, ignore_errors=True))


# --- validation ----------------------------------------------------------------------------------


# --- experiments ---------------------------------------------------------------------------------


@transaction.atomic
def experiment_create(
    *,
    access: ProjectAccess,
    actor: User,
    name: str,
    description: str = "",
    visibility: str | None = None,
    config: dict[str, Any],
) -> Experiment:
    """Create an experiment from a configuration (see `experiment_validate`); without a name it
    is called "Experiment N" (N: the project's experiment count plus one)."""
    fields = experiment_validate(access=access, values=config)
    extra = {"visibility": visibility} if visibility else {}
    if not (name or "").strip():
        name = f"Experiment {Experiment.objects.filter(project=access.project).count() + 1}"
    return Experiment.objects.create(
        project=access.project,
        owner=actor,
        name=name,
        description=description or "",
        **fields,
        **extra,
    )


@transaction.atomic
def experiment_update(
    *, access: ProjectAccess, experiment: Experiment, changes: dict[str, Any]
) -> Experiment:
    """Change an experiment's name, description, visibility or configuration. The whole
    configuration is validated again; runs keep the snapshot they started with."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    config_changes = {k: v for k, v in changes.items() if k in CONFIG_FIELDS}
    if "options" in config_changes:
        config_changes["options"] = {**(experiment.options or {}), **config_changes["options"]}
    if config_changes:
        values = {**_current_values(experiment), **config_changes}
        if "dataset" in config_changes and "split_index" not in config_changes:
            values["split_index"] = None  # a split belongs to its dataset
        if "template" in config_changes and "architecture" not in config_changes:
            values["architecture"] = None
        for name, value in experiment_validate(access=access, values=values).items():
            setattr(experiment, name, value)
    for name in ("name", "description", "visibility"):
        if name in changes:
            setattr(experiment, name, changes[name] if changes[name] is not None else "")
    experiment.save()
    return experiment


def _active_runs(experiment: Experiment):
    return Run.objects.filter(experiment=experiment, task__state__in=list(PENDING_STATES))


@transaction.atomic
def experiment_delete(*, experiment: Experiment) -> None:
    """Delete an experiment with its runs, their models, checkpoints and evaluations.

    Refused with TRAINING_IN_PROGRESS while one of its runs is pending or running.
    """
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if _active_runs(experiment).exists():
        raise TrainingInProgress("A run of this experiment is in progress; stop it first.")
    for run in Run.objects.filter(experiment=experiment).select_related("task"):
        _run_delete(run)
    experiment.delete()


# --- runs ----------------------------------------------------------------------------------------


def run_snapshot(experiment: Experiment, fields: dict[str, Any]) -> dict[str, Any]:
    """The JSON configuration a run keeps (ids and plain values of a validated configuration)."""
    dataset: Dataset = fields["dataset"]
    split: Split | None = fields["split"]
    val: Dataset | None = fields["val_dataset"]
    return {
        "experiment_id": experiment.pk,
        "dataset_id": str(dataset.pk),
        "dataset_name": dataset.name,
        "split_id": split.pk if split else None,
        "split_index": split.index if split else None,
        "split_name": split.name if split else None,
        "val_dataset_id": str(val.pk) if val else None,
        "architecture": fields["architecture"],
        "template": fields["template"],
        "input_size": list(fields["input_size"]),
        "optimizer": fields["optimizer"],
        "learning_rate": fields["learning_rate"],
        "scheduler": fields["scheduler"] or None,
        "weight_decay": fields["weight_decay"],
        "epochs": fields["epochs"],
        "batch_size": fields["batch_size"],
        "augmentation": dict(fields["augmentation"]),
        "seed": fields["seed"],
        "devices": list(fields["devices"]),
        "num_classes": int(dataset.num_classes),
        "class_names": [str(c) for c in dataset.class_names],
        "options": dict(fields["options"]),
        "normalize": run_preprocessing(dataset, fields["options"]),
    }


def _run_cluster(*, access: ProjectAccess, actor, experiment: Experiment, config, name: str):
    """The cluster a run trains: from the architecture or the template, on the first device."""
    from apps.clusters.models import Cluster, Host
    from apps.clusters.services import (
        cluster_create,
        cluster_create_from_architecture,
        host_id_for_device,
        host_refresh,
    )

    if config["architecture"] == Experiment.ARCHITECTURE_TEMPLATE:
        cluster = cluster_create(
            project=access.project,
            actor=actor,
            name=name,
            template_text=config["template"],
            seed=config["seed"],
            visibility=experiment.visibility,
        )
    else:
        from ml.architectures import architecture_source

        cluster = cluster_create_from_architecture(
            project=access.project,
            actor=actor,
            name=name,
            architecture=architecture_source(
                config["architecture"], dropout=config["options"].get("dropout") or 0.0
            ),
            input_shape=config["input_size"],
            num_classes=config["num_classes"],
            seed=config["seed"],
        )
    first = config["devices"][0]
    host_id = host_id_for_device(first)
    updates: dict[str, Any] = {"visibility": experiment.visibility}
    if host_id != "cpu":
        if not Host.objects.filter(pk=host_id, state="available").exists():
            host_refresh()
        if not Host.objects.filter(pk=host_id, state="available").exists():
            raise ValidationFailed.for_field("devices", f"device '{first}' is not available.")
        updates["host_id"] = host_id
    Cluster.objects.filter(pk=cluster.pk).update(**updates)
    cluster.refresh_from_db()
    return cluster


@transaction.atomic
def run_start(*, access: ProjectAccess, actor: User, experiment: Experiment) -> Run:
    """Start a run of the experiment: validate its configuration against the data as it is now,
    create the run's cluster and its `studio_train` task (queued on the first device's host).

    TRAINING_IN_PROGRESS while another run of the experiment is pending or running.
    """
    from apps.clusters.services import cluster_task_create

    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if _active_runs(experiment).exists():
        raise TrainingInProgress("A run of this experiment is already in progress.")
    fields = experiment_validate(access=access, values=_current_values(experiment))
    config = run_snapshot(experiment, fields)
    number = (
        Run.objects.filter(experiment=experiment)
        .order_by("-number")
        .values_list("number", flat=True)
        .first()
        or 0
    ) + 1
    run = Run(
        project=access.project,
        owner=actor,
        visibility=experiment.visibility,
        experiment=experiment,
        number=number,
        config=config,
    )
    name = f"{experiment.name[:150]} · run {number}"
    cluster = _run_cluster(
        access=access, actor=actor, experiment=experiment, config=config, name=name
    )
    task = cluster_task_create(
        project=access.project,
        actor=actor,
        kind=TRAIN_KIND,
        name=name,
        cluster=cluster,
        dataset=fields["dataset"],
        params={"run_id": run.pk},
        visibility=experiment.visibility,
    )
    run.task, run.cluster = task, cluster
    run.save()
    return run


def run_stop(*, run: Run) -> Run:
    """Stop a run: a pending one at once, a running one after its current batches (it keeps its
    checkpoints and can be resumed). Stopping a run that has ended changes nothing."""
    from apps.tasks.services import task_abort

    if run.task is not None:
        task_abort(task=run.task)
    run.refresh_from_db()
    return run


@transaction.atomic
def run_resume(*, run: Run) -> Run:
    """Queue a stopped or failed run again; it continues from its last checkpoint (epoch, weights
    and optimizer state), or from the start when it had completed no epoch."""
    from apps.datasets.selectors import task_dataset_id
    from apps.tasks.services import task_retry

    experiment = Experiment.objects.select_for_update().get(pk=run.experiment_id)
    run = Run.objects.select_related("task", "cluster").get(pk=run.pk)
    status = run.status
    if run.task is None or run.cluster is None:
        raise Conflict("The run's task or model was deleted; start a new run.")
    if status == "completed":
        raise Conflict("The run has completed; start a new run to train again.")
    if status in ("pending", "running"):
        raise TrainingInProgress("The run is already in progress.")
    if _active_runs(experiment).exclude(pk=run.pk).exists():
        raise TrainingInProgress("Another run of this experiment is in progress.")
    if task_dataset_id(run.task) is None:
        raise Conflict("The run's dataset was deleted.")
    task_retry(task=run.task)
    Run.objects.filter(pk=run.pk).update(resumes=run.resumes + 1, updated_at=timezone.now())
    run.refresh_from_db()
    run.task.refresh_from_db()
    return run


def _run_delete(run: Run) -> None:
    from apps.clusters.models import Checkpoint
    from apps.clusters.services import checkpoint_delete, cluster_delete

    for evaluation in Evaluation.objects.filter(run=run):
        evaluation_delete(evaluation=evaluation)
    ids = {run.best_checkpoint_id, run.last_checkpoint_id} - {None}
    for checkpoint in Checkpoint.objects.filter(pk__in=ids):
        checkpoint_delete(checkpoint=checkpoint)
    directory = run_dir(run)
    task, cluster_id = run.task, run.cluster_id
    run.delete()
    if task is not None:
        task.delete()
    if cluster_id is not None:
        from apps.clusters.models import Cluster

        cluster = Cluster.objects.filter(pk=cluster_id).first()
        if cluster is not None:
            cluster_delete(cluster=cluster)
    _remove_tree_on_commit(directory)


@transaction.atomic
def run_delete(*, run: Run) -> None:
    """Delete a run with its task, events, model, checkpoints and evaluations; refused with
    TRAINING_IN_PROGRESS while it is pending or running."""
    # of=("self",): PostgreSQL cannot lock the nullable side of the outer join to the task.
    run = Run.objects.select_for_update(of=("self",)).select_related("task").get(pk=run.pk)
    if run.status in ("pending", "running"):
        raise TrainingInProgress("The run is in progress; stop it before deleting it.")
    _run_delete(run)


# --- evaluations ---------------------------------------------------------------------------------


@transaction.atomic
def evaluation_create(  # noqa: PLR0913
    *,
    access: ProjectAccess,
    actor: User,
    run: Run,
    checkpoint: str = "best",
    dataset: Dataset | None = None,
    split_index: int | None = None,
    split_subset: str | None = None,
    batch_size: int = 256,
    name: str = "",
) -> Evaluation:
    """Create and queue the evaluation of a run's `best` or `last` checkpoint on a subset of a
    dataset (default: the run's dataset and split, subset `test` with a split, else all items)."""
    from apps.datasets.services import dataset_check_usable, task_dataset_link
    from apps.tasks.services import task_create
    from apps.training.selectors import run_checkpoint_get

    try:
        ckpt = run_checkpoint_get(run=run, which=checkpoint)
    except Exception as exc:  # NotFound: no epoch completed yet
        raise CheckpointNotFound(getattr(exc, "message", str(exc))) from None
    config = run.config or {}
    if dataset is None:
        dataset = Dataset.objects.filter(pk=config.get("dataset_id"), project=run.project).first()
        if dataset is None:
            raise ValidationFailed.for_field("dataset_id", "the run's dataset was deleted.")
        if split_index is None and config.get("split_id"):
            split_obj = Split.objects.filter(pk=config["split_id"]).first()
            split_index = split_obj.index if split_obj else None
    training_data.check_classification(dataset, "dataset_id")
    if list(dataset.class_names) != list(config.get("class_names") or []):
        raise ValidationFailed.for_field("dataset_id", "its classes differ from the run's.")
    try:
        training_data.check_input_size(dataset, config.get("input_size"))
    except ValidationFailed as exc:
        raise ValidationFailed.for_field(
            "dataset_id", f"its samples do not fit the model: {exc.message}"
        ) from None
    split = None
    if split_index is not None:
        split = Split.objects.filter(dataset=dataset, index=split_index).first()
        if split is None:
            from apps.datasets.exceptions import SplitNotFound

            raise SplitNotFound(f"Split {split_index} does not exist for this dataset.")
    subset = split_subset or ("test" if split is not None else "all")
    if subset != "all" and split is None:
        raise ValidationFailed.for_field(
            "split_subset", f"'{subset}' needs a split_index (this dataset has no split chosen)."
        )
    if not len(training_data.subset_indices(dataset, split, subset)):
        raise ValidationFailed.for_field("split_subset", f"the subset '{subset}' is empty.")
    evaluation = Evaluation(
        project=access.project,
        owner=actor,
        visibility=run.visibility,
        name=name or f"{run.pk} {checkpoint} on {dataset.name}/{subset}",
        experiment_id=run.experiment_id,
        run=run,
        checkpoint_name=checkpoint,
        checkpoint=ckpt,
        dataset=dataset,
        split=split,
        split_index=split.index if split else None,
        split_subset=subset,
        batch_size=batch_size,
    )
    dataset_check_usable(project=access.project, dataset=dataset)
    evaluation.task = task_create(
        project=access.project,
        actor=actor,
        kind=EVALUATE_KIND,
        name=evaluation.name[:200],
        params={"evaluation_id": evaluation.pk},
        visibility=run.visibility,
    )
    task_dataset_link(task=evaluation.task, dataset=dataset)
    evaluation.save()
    return evaluation


@transaction.atomic
def evaluation_delete(*, evaluation: Evaluation) -> None:
    """Delete an evaluation, its task and its per-item arrays (a running one is aborted)."""
    from apps.tasks.services import task_abort

    directory = evaluation_dir(evaluation)
    task = Task.objects.filter(pk=evaluation.task_id).first()
    evaluation.delete()
    if task is not None:
        if task.state in PENDING_STATES:
            task_abort(task=task)
        task.delete()
    _remove_tree_on_commit(directory)
