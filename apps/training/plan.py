"""The training studio plan's experiment configuration (plan/02-data-layer/00-storage-layout.md,
plan/05-training/01-hyperparameters.md, 02-augmentation.md, plan/04-models/): its four groups
`model`, `hyperparameters`, `augmentations` and `hardware`, mapped onto an Experiment's columns
(`architecture`, `optimizer`, `learning_rate`, `scheduler`, `weight_decay`, `epochs`,
`batch_size`, `devices`) and its `options` (everything else).

A body in the plan's shape (any of the four groups, or no field at all) starts from the plan's
classification defaults; Orchard's flat fields keep Orchard's own defaults.
"""

from __future__ import annotations

from typing import Any

# plan/05-training/01-hyperparameters.md, "Classification / Anomaly Detection".
PLAN_DEFAULT_COLUMNS: dict[str, Any] = {
    "architecture": "resnet18",
    "optimizer": "adam",
    "learning_rate": 0.001,
    "weight_decay": 0.0001,
    "scheduler": "cosine",
    "batch_size": 32,
    "epochs": 50,
}
PLAN_DEFAULT_OPTIONS: dict[str, Any] = {
    "warmup_epochs": 5,
    "early_stopping_patience": 10,
    "loss": "cross_entropy",
    "dropout": 0.2,
}
# Options and their defaults for a configuration that does not set them.
OPTION_DEFAULTS: dict[str, Any] = {
    "pretrained": False,
    "freeze_backbone": False,
    "dropout": 0.0,
    "momentum": 0.9,
    "warmup_epochs": 0,
    "step_size": None,
    "gamma": 0.1,
    "poly_power": 0.9,
    "milestones": None,
    "early_stopping_patience": 0,
    "loss": "cross_entropy",
    "precision": "32",
    "augmentations": None,
}
# The default pipelines keep the data's own image size (the plan's 224x224 ImageNet pipeline
# would make the small images Orchard trains on CPUs fifty times bigger; send it to get it).
DEFAULT_AUGMENTATIONS = {
    "train": [{"name": "ToTensor", "params": {}}],
    "val": [{"name": "ToTensor", "params": {}}],
}
HYPERPARAMETER_COLUMNS = {
    "optimizer": "optimizer",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "scheduler": "scheduler",
    "batch_size": "batch_size",
    "max_epochs": "epochs",
}
HYPERPARAMETER_OPTIONS = (
    "momentum",
    "warmup_epochs",
    "step_size",
    "gamma",
    "poly_power",
    "milestones",
    "early_stopping_patience",
    "loss",
    "dropout",
)
PLAN_GROUPS = ("model", "hyperparameters", "augmentations", "hardware")


def is_plan_body(data: dict[str, Any]) -> bool:
    """Whether a create body is in the plan's shape (or empty): it then takes the plan's
    defaults."""
    return any(group in data for group in PLAN_GROUPS) or not (set(data) - {"name", "split_index"})


def flatten(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(column changes, option changes) of the plan groups of a validated body."""
    columns: dict[str, Any] = {}
    options: dict[str, Any] = {}
    model = data.get("model") or {}
    if "backbone" in model:
        columns["architecture"] = model["backbone"]
    for name in ("pretrained", "freeze_backbone", "dropout"):
        if name in model:
            options[name] = model[name]
    hyper = data.get("hyperparameters") or {}
    for name, column in HYPERPARAMETER_COLUMNS.items():
        if name in hyper:
            value = hyper[name]
            columns[column] = None if column == "scheduler" and value == "none" else value
    for name in HYPERPARAMETER_OPTIONS:
        if name in hyper:
            options[name] = hyper[name]
    if "augmentations" in data:
        options["augmentations"] = data["augmentations"]
    hardware = data.get("hardware") or {}
    if "selected_devices" in hardware:
        columns["devices"] = hardware["selected_devices"]
    if "precision" in hardware:
        options["precision"] = hardware["precision"]
    return columns, options


def option(options: dict[str, Any] | None, name: str) -> Any:
    value = (options or {}).get(name)
    return OPTION_DEFAULTS[name] if value is None else value


def plan_view(experiment, split_index: int | None) -> dict[str, Any]:
    """The experiment as the plan's experiment.json shows it."""
    options = experiment.options or {}
    return {
        "id": experiment.pk,
        "name": experiment.name,
        "created_at": experiment.created_at.isoformat().replace("+00:00", "Z"),
        "split_index": split_index,
        "model": {
            "backbone": experiment.architecture,
            "head": "classification",
            "pretrained": bool(option(options, "pretrained")),
            "freeze_backbone": bool(option(options, "freeze_backbone")),
            "dropout": float(option(options, "dropout")),
        },
        "hyperparameters": {
            "optimizer": experiment.optimizer,
            "learning_rate": experiment.learning_rate,
            "weight_decay": experiment.weight_decay,
            "momentum": option(options, "momentum"),
            "scheduler": experiment.scheduler or "none",
            "warmup_epochs": option(options, "warmup_epochs"),
            "step_size": option(options, "step_size"),
            "gamma": option(options, "gamma"),
            "poly_power": option(options, "poly_power"),
            "milestones": option(options, "milestones"),
            "batch_size": experiment.batch_size,
            "max_epochs": experiment.epochs,
            "early_stopping_patience": option(options, "early_stopping_patience"),
            "loss": option(options, "loss"),
            "dropout": float(option(options, "dropout")),
        },
        "augmentations": option(options, "augmentations") or DEFAULT_AUGMENTATIONS,
        "hardware": {
            "selected_devices": list(experiment.devices or []),
            "precision": option(options, "precision"),
        },
    }
