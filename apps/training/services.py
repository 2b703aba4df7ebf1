"""Writes of the training studio: experiments (validated configurations), runs (start, stop,
resume, delete) and evaluations.

A run is a `studio_train` task of the job engine on a cluster created for it; its handler lives in
`apps.training.handlers`. Configurations that cannot work are refused when they are written (and
again when a run starts, since the data may have changed) with VALIDATION_ERROR naming the field.
"""

from __future__ import annotations

import logging
import math
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
from apps.training.exceptions import CheckpointNotFound, GpuNotAvailable
from apps.training.models import Evaluation, Experiment, Run

if TYPE_CHECKING:
    from apps.accounts.models import User

logger = logging.getLogger(__name__)

TRAIN_KIND = "studio_train"
EVALUATE_KIND = "studio_evaluate"
DEFAULT_ARCHITECTURE = "cnn_small"
# Named architectures are built on the meta device to check them; this caps their size.
MAX_PARAMETERS = 50_000_000

# The configuration fields of an experiment (model field names; `dataset`, `split_index` and
# `val_dataset` are resolved objects / numbers).
CONFIG_FIELDS = (
    "dataset",
    "split_index",
    "val_dataset",
    "architecture",
    "template",
    "input_size",
    "optimizer",
    "learning_rate",
    "scheduler",
    "weight_decay",
    "epochs",
    "batch_size",
    "augmentation",
    "seed",
    "devices",
    "options",
)


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


def default_devices() -> list[str]:
    """["gpu:0"] when CUDA can train here, else ["cpu"] (like /api/system/devices)."""
    import torch

    return ["gpu:0"] if torch.cuda.is_available() and torch.cuda.device_count() > 0 else ["cpu"]


def _field_error(exc: ValueError, fields: tuple[str, ...], default: str) -> ValidationFailed:
    """ValidationFailed naming the field a ValueError's message starts with (else `default`)."""
    message = str(exc)
    field = next((f for f in fields if message.startswith(f + " ")), default)
    return ValidationFailed.for_field(field, message)


def _check_architecture(name: str, input_size: list[int], num_classes: int) -> None:
    """Build the named architecture on the meta device (no memory) and run a forward pass."""
    import torch

    from ml.networks import ArchitectureError, build_architecture

    try:
        with torch.device("meta"):
            model = build_architecture(
                name, input_shape=tuple(input_size), num_classes=num_classes, seed=None
            )
            parameters = sum(p.numel() for p in model.parameters())
            if parameters > MAX_PARAMETERS:
                raise ValidationFailed.for_field(
                    "input_size",
                    f"gives '{name}' {parameters:,} parameters (at most {MAX_PARAMETERS:,}).",
                )
            out = model(torch.zeros((2, *input_size)))
    except ArchitectureError as exc:
        raise ValidationFailed.for_field("input_size", str(exc)) from None
    except (RuntimeError, ValueError) as exc:
        raise ValidationFailed.for_field(
            "input_size", f"'{name}' cannot take inputs of size {input_size}: {exc}"
        ) from None
    if tuple(out.shape) != (2, num_classes):
        raise ValidationFailed.for_field(
            "architecture", f"'{name}' gives outputs of shape {tuple(out.shape)[1:]}."
        )


def _check_template(text: str, input_size: list[int], num_classes: int) -> None:
    from apps.clusters.services import parse_template_or_fail

    template = parse_template_or_fail(text)
    if len(template.inputs) != 1 or len(template.outputs) != 1:
        raise ValidationFailed.for_field(
            "template", "a studio template needs exactly one input and one output brick."
        )
    inputs = next(iter(template.inputs.values()))
    outputs = next(iter(template.outputs.values()))
    if inputs != math.prod(input_size):
        raise ValidationFailed.for_field(
            "input_size",
            f"does not fit the template: its input brick takes {inputs} values, "
            f"{input_size} holds {math.prod(input_size)}.",
        )
    if outputs != num_classes:
        raise ValidationFailed.for_field(
            "template",
            f"its output brick has {outputs} neurons but the dataset has {num_classes} classes.",
        )


def experiment_validate(*, access: ProjectAccess, values: dict[str, Any]) -> dict[str, Any]:  # noqa: C901, PLR0915
    """Check a whole experiment configuration and fill its defaults.

    `values` holds the CONFIG_FIELDS (missing ones take their defaults). Returns the model field
    values (`dataset`, `split`, `val_dataset` objects included). Raises ValidationFailed naming the
    first field that cannot work with the data, the model or this machine.
    """
    from ml.augment import AugmentConfig
    from ml.networks import architecture_names
    from ml.parallel import DeviceListError, parse_devices
    from ml.training import TrainConfig

    out: dict[str, Any] = {}
    # -- data
    dataset = values.get("dataset")
    if dataset is None:
        from apps.datasets.selectors import studio_dataset

        dataset = studio_dataset(access=access)
        if dataset is None:
            raise ValidationFailed.for_field(
                "dataset_id", "required: this project has no studio dataset to default to."
            )
    training_data.check_classification(dataset, "dataset_id")
    out["dataset"] = dataset

    split = None
    split_index = values.get("split_index")
    if split_index is not None:
        if not training_data.is_image(dataset):
            raise ValidationFailed.for_field(
                "split_index",
                f"the dataset is a {dataset.kind} dataset without splits; "
                "use the whole dataset (null) and val_dataset_id for validation.",
            )
        split = Split.objects.filter(dataset=dataset, index=split_index).first()
        if split is None:
            from apps.datasets.exceptions import SplitNotFound

            count = Split.objects.filter(dataset=dataset).count()
            message = f"split {split_index} does not exist (the dataset has {count})."
            raise SplitNotFound(f"split_index: {message}", details={"split_index": [message]})
        if not len(training_data.subset_indices(dataset, split, "train")):
            raise ValidationFailed.for_field("split_index", "the split has no train items.")
    out["split"] = split

    options = _check_options(values.get("options") or {})
    pipeline = _plan_pipelines(dataset, options)
    requested_size = values.get("input_size")
    if pipeline is not None and pipeline["size"] is not None:
        requested_size = list(pipeline["size"])
    input_size = training_data.check_input_size(dataset, requested_size)
    out["input_size"] = input_size

    val_dataset = values.get("val_dataset")
    if val_dataset is not None:
        if split is not None:
            raise ValidationFailed.for_field(
                "val_dataset_id", "not with a split: the split's val items validate."
            )
        if val_dataset.pk == dataset.pk:
            raise ValidationFailed.for_field("val_dataset_id", "must differ from the dataset.")
        training_data.check_classification(val_dataset, "val_dataset_id")
        if list(val_dataset.class_names) != list(dataset.class_names):
            raise ValidationFailed.for_field(
                "val_dataset_id", "its classes differ from the dataset's."
            )
        try:
            training_data.check_input_size(val_dataset, input_size)
        except ValidationFailed as exc:
            raise ValidationFailed.for_field(
                "val_dataset_id", f"its samples do not fit the input size: {exc.message}"
            ) from None
    out["val_dataset"] = val_dataset

    # -- model
    num_classes = int(dataset.num_classes)
    template = (values.get("template") or "").strip("\n")
    architecture = values.get("architecture") or (
        Experiment.ARCHITECTURE_TEMPLATE if template.strip() else DEFAULT_ARCHITECTURE
    )
    if options.get("pretrained"):
        raise ValidationFailed.for_field(
            "model.pretrained",
            "pretrained weights are not available: Orchard builds the architectures from torch "
            "layers and downloads nothing, so every network starts from random weights; set "
            "pretrained to false.",
        )
    if architecture == Experiment.ARCHITECTURE_TEMPLATE:
        if options.get("dropout"):
            raise ValidationFailed.for_field("dropout", "a template network takes no dropout.")
        if not template.strip():
            raise ValidationFailed.for_field(
                "template", "required when the architecture is 'template'."
            )
        _check_template(template, input_size, num_classes)
    else:
        if architecture not in architecture_names():
            raise ValidationFailed.for_field(
                "architecture",
                f"unknown architecture '{architecture}' (known: "
                f"{', '.join(architecture_names())}, or 'template' with a template).",
            )
        if template.strip():
            raise ValidationFailed.for_field("template", "only with the architecture 'template'.")
        from ml.networks import architecture_source

        source = architecture_source(architecture, dropout=options.get("dropout") or 0.0)
        if len(source) > 32:
            raise ValidationFailed.for_field("dropout", "at most three decimals.")
        _check_architecture(source, input_size, num_classes)
    out["architecture"], out["template"] = architecture, template if template.strip() else ""

    # -- optimisation
    defaults = {f.name: f.get_default() for f in Experiment._meta.fields}
    hyper = {
        name: defaults[name] if values.get(name) is None else values[name]
        for name in ("optimizer", "learning_rate", "weight_decay", "epochs", "batch_size")
    }
    scheduler = values.get("scheduler") or None
    seed = values.get("seed") if "seed" in values else defaults["seed"]
    extras = train_options(options)
    try:
        TrainConfig(**hyper, scheduler=scheduler, seed=seed, **extras)
    except (ValueError, TypeError) as exc:
        raise _field_error(exc, (*hyper, "scheduler", "seed", *extras), "learning_rate") from None
    out.update(hyper, scheduler=scheduler or "", seed=seed)

    try:
        if pipeline is not None:
            augmentation = pipeline["augment"]
        else:
            augmentation = AugmentConfig.from_dict(values.get("augmentation") or {})
    except (ValueError, TypeError) as exc:
        raise ValidationFailed.for_field("augmentation", str(exc)) from None
    if augmentation.enabled and len(input_size) not in (2, 3):
        raise ValidationFailed.for_field(
            "augmentation", f"needs an image input size ([C, H, W]), not {input_size}."
        )
    out["augmentation"] = {k: v for k, v in augmentation.to_dict().items() if v}

    devices = values.get("devices") or default_devices()
    try:
        parse_devices(devices)
    except DeviceListError as exc:
        wants_gpu = any(str(d).strip().lower().startswith(("gpu", "cuda")) for d in devices)
        if wants_gpu and not _cuda_count():
            raise GpuNotAvailable(f"devices: {exc}", details={"devices": [str(exc)]}) from None
        raise ValidationFailed.for_field("devices", str(exc)) from None
    out["devices"] = [str(d).strip().lower().replace("cuda:", "gpu:") for d in devices]
    precision = options.get("precision") or "32"
    if precision in ("16-mixed", "16") and not out["devices"][0].startswith("gpu"):
        raise GpuNotAvailable(
            "hardware.precision: '16-mixed' needs a GPU device (use '32' or 'bf16-mixed' on "
            "the CPU).",
            details={"hardware.precision": ["'16-mixed' needs a GPU device."]},
        )
    out["options"] = options
    return out


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "pretrained": (bool,),
    "freeze_backbone": (bool,),
    "dropout": (int, float),
    "momentum": (int, float),
    "warmup_epochs": (int,),
    "step_size": (int,),
    "gamma": (int, float),
    "poly_power": (int, float),
    "milestones": (list,),
    "early_stopping_patience": (int,),
    "loss": (str,),
    "precision": (str,),
    "augmentations": (dict,),
}


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The experiment's plan options, with only known names of the right types (None: unset)."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in OPTION_TYPES:
            raise ValidationFailed.for_field(name, "unknown option.")
        if value is None:
            continue
        types = OPTION_TYPES[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ValidationFailed.for_field(name, "has the wrong type.")
        out[name] = value
    dropout = out.get("dropout")
    if dropout is not None and not 0.0 <= dropout <= 0.9:
        raise ValidationFailed.for_field("dropout", "must be between 0.0 and 0.9.")
    return out


def train_options(options: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig arguments of an experiment's options (unset ones left to TrainConfig)."""
    names = (
        "momentum",
        "warmup_epochs",
        "step_size",
        "gamma",
        "poly_power",
        "milestones",
        "early_stopping_patience",
        "loss",
        "precision",
    )
    return {name: options[name] for name in names if options.get(name) is not None}


def _plan_pipelines(dataset: Dataset, options: dict[str, Any]) -> dict[str, Any] | None:
    """The plan's `augmentations` of the options, checked: None without them; else the input
    size (H, W) or None, the train augmentation and the normalisation (mean, std) or None."""
    from ml.augment import parse_plan_pipeline

    pipelines = options.get("augmentations")
    if pipelines is None:
        return None
    unknown = sorted(set(pipelines) - {"train", "val"})
    if unknown:
        raise ValidationFailed.for_field("augmentations", f"unknown key(s) {', '.join(unknown)}.")
    channels = int(dataset.input_shape[0]) if training_data.is_image(dataset) else 1
    parsed = {}
    for which in ("train", "val"):
        try:
            parsed[which] = parse_plan_pipeline(
                pipelines.get(which) or [], channels=channels, train=which == "train"
            )
        except ValueError as exc:
            raise ValidationFailed.for_field(f"augmentations.{which}", str(exc)) from None
    train, val = parsed["train"], parsed["val"]
    if (train.mean, train.std) != (val.mean, val.std):
        raise ValidationFailed.for_field(
            "augmentations", "train and val must end with the same Normalize (or neither)."
        )
    if train.size and val.size and train.size != val.size:
        raise ValidationFailed.for_field(
            "augmentations",
            f"train gives {list(train.size)} images, val {list(val.size)}: the network takes one "
            "size.",
        )
    size = val.size or train.size
    if size is not None and not training_data.is_image(dataset):
        raise ValidationFailed.for_field("augmentations", "Resize needs an image dataset.")
    return {"size": size, "augment": train.augment, "mean": train.mean, "std": train.std}


def run_preprocessing(dataset: Dataset, options: dict[str, Any]) -> dict[str, Any]:
    """The normalisation (mean, std per channel, or None) of a validated configuration."""
    pipeline = _plan_pipelines(dataset, options)
    if pipeline is None or pipeline["mean"] is None:
        return {"mean": None, "std": None}
    return {"mean": list(pipeline["mean"]), "std": list(pipeline["std"])}


def _current_values(experiment: Experiment) -> dict[str, Any]:
    values = {name: getattr(experiment, name) for name in CONFIG_FIELDS if name != "split_index"}
    values["split_index"] = experiment.split.index if experiment.split_id else None
    return values


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
        from ml.networks import architecture_source

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
