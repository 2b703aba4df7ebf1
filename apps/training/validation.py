"""Validation of an experiment's configuration: the fields of an experiment, the checks that
refuse a configuration that cannot work (dataset, split, sizes, architecture or template, devices,
options) with VALIDATION_ERROR naming the field, and the training options and preprocessing a run
gets from it. Used by `services.py` when an experiment is written and again when a run starts."""

from __future__ import annotations

import math
from typing import Any

from apps.core.exceptions import ValidationFailed
from apps.core.tenancy import ProjectAccess
from apps.datasets.models import Dataset, Split
from apps.training import data as training_data
from apps.training.exceptions import GpuNotAvailable
from apps.training.models import Experiment

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

    from ml.architectures import ArchitectureError, build_architecture

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


def experiment_validate(*, access: ProjectAccess, values: dict[str, Any]) -> dict[str, Any]:
    """Check a whole experiment configuration and fill its defaults.

    `values` holds the CONFIG_FIELDS (missing ones take their defaults). Returns the model field
    values (`dataset`, `split`, `val_dataset` objects included). Raises ValidationFailed naming the
    first field that cannot work with the data, the model or this machine (checked in the order
    of the steps below: data, model, optimisation, augmentation, devices).
    """
    out: dict[str, Any] = {}
    # -- data
    dataset = _check_dataset(access, values.get("dataset"))
    out["dataset"] = dataset
    split = _check_split(dataset, values.get("split_index"))
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
        _check_val_dataset(val_dataset, dataset=dataset, split=split, input_size=input_size)
    out["val_dataset"] = val_dataset

    # -- model
    out["architecture"], out["template"] = _check_model(
        values, options, input_size, int(dataset.num_classes)
    )
    # -- optimisation
    out.update(_check_optimisation(values, options))
    out["augmentation"] = _check_augmentation(values, pipeline, input_size)
    # -- hardware
    out["devices"] = _check_devices(values.get("devices") or default_devices())
    precision = options.get("precision") or "32"
    if precision in ("16-mixed", "16") and not out["devices"][0].startswith("gpu"):
        raise GpuNotAvailable(
            "hardware.precision: '16-mixed' needs a GPU device (use '32' or 'bf16-mixed' on "
            "the CPU).",
            details={"hardware.precision": ["'16-mixed' needs a GPU device."]},
        )
    out["options"] = options
    return out


def _check_dataset(access: ProjectAccess, dataset: Dataset | None) -> Dataset:
    """The experiment's dataset (the project's studio dataset by default), a classification one."""
    if dataset is None:
        from apps.datasets.selectors import studio_dataset

        dataset = studio_dataset(access=access)
        if dataset is None:
            raise ValidationFailed.for_field(
                "dataset_id", "required: this project has no studio dataset to default to."
            )
    training_data.check_classification(dataset, "dataset_id")
    return dataset


def _check_split(dataset: Dataset, split_index: int | None) -> Split | None:
    """The split named by `split_index` (None: the whole dataset); it must have train items."""
    if split_index is None:
        return None
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
    return split


def _check_val_dataset(
    val_dataset: Dataset, *, dataset: Dataset, split: Split | None, input_size: list[int]
) -> None:
    """A validation dataset: not with a split, another dataset with the same classes, samples of
    the input size."""
    if split is not None:
        raise ValidationFailed.for_field(
            "val_dataset_id", "not with a split: the split's val items validate."
        )
    if val_dataset.pk == dataset.pk:
        raise ValidationFailed.for_field("val_dataset_id", "must differ from the dataset.")
    training_data.check_classification(val_dataset, "val_dataset_id")
    if list(val_dataset.class_names) != list(dataset.class_names):
        raise ValidationFailed.for_field("val_dataset_id", "its classes differ from the dataset's.")
    try:
        training_data.check_input_size(val_dataset, input_size)
    except ValidationFailed as exc:
        raise ValidationFailed.for_field(
            "val_dataset_id", f"its samples do not fit the input size: {exc.message}"
        ) from None


def _check_model(
    values: dict[str, Any], options: dict[str, Any], input_size: list[int], num_classes: int
) -> tuple[str, str]:
    """The architecture and template (a named architecture, or 'template' with a template),
    built to check that they fit the input size and classes."""
    from ml.architectures import architecture_names

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
        from ml.architectures import architecture_source

        source = architecture_source(architecture, dropout=options.get("dropout") or 0.0)
        if len(source) > 32:
            raise ValidationFailed.for_field("dropout", "at most three decimals.")
        _check_architecture(source, input_size, num_classes)
    return architecture, template if template.strip() else ""


def _check_optimisation(values: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters, scheduler and seed (defaults filled), checked by building the
    run's TrainConfig."""
    from ml.training import TrainConfig

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
    return {**hyper, "scheduler": scheduler or "", "seed": seed}


def _check_augmentation(
    values: dict[str, Any], pipeline: dict[str, Any] | None, input_size: list[int]
) -> dict[str, Any]:
    """The augmentation (the preprocessing plan's, else the experiment's), its set values only."""
    from ml.augment import AugmentConfig

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
    return {k: v for k, v in augmentation.to_dict().items() if v}


def _check_devices(devices: list[Any]) -> list[str]:
    """The devices, normalised (`gpu:N`); GPU_NOT_AVAILABLE for a GPU this machine lacks."""
    from ml.parallel import DeviceListError, parse_devices

    try:
        parse_devices(devices)
    except DeviceListError as exc:
        wants_gpu = any(str(d).strip().lower().startswith(("gpu", "cuda")) for d in devices)
        if wants_gpu and not _cuda_count():
            raise GpuNotAvailable(f"devices: {exc}", details={"devices": [str(exc)]}) from None
        raise ValidationFailed.for_field("devices", str(exc)) from None
    return [str(d).strip().lower().replace("cuda:", "gpu:") for d in devices]


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
