"""Writes of the Label Studio half: backends, the protocol's setup/predict/webhook/train, and
training runs enqueued on the job engine.

The gateway (`views.py`) resolves a backend with `selectors.backend_for_gateway`, checks its
Basic credentials with `backend_authenticate`, and calls one function here per route. Every
answer here is already in the protocol's shapes (the view only serializes it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string, salted_hmac

from apps.core.exceptions import (
    Conflict,
    TrainingInProgress,
    Unauthorized,
    ValidationFailed,
)
from apps.core.throttling import credential_attempt
from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.features import ModelSpec
from apps.mlbackend.labelstudio.fetch import (
    FetchPolicy,
    fetch_task_value,
    parse_host_entry,
    url_origin,
)
from apps.mlbackend.labelstudio.label_config import Interface, LabelConfigError, parse_interface
from apps.mlbackend.models import (
    LabelStudioAnnotation,
    LabelStudioBackend,
    LabelStudioModelVersion,
)
from apps.mlbackend.models.labelstudio import model_version_name

if TYPE_CHECKING:
    from apps.accounts.models import Project, User
    from apps.clusters.models import Checkpoint, Cluster
    from apps.tasks.models import Task
    from apps.training.models import Experiment, Run

TRAIN_KIND = "labelstudio_train"
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 16,
    "learning_rate": 2e-3,
    "optimizer": "adam",
    "seed": 0,
}
MAX_TASKS_PER_PREDICT = 1000
# /setup's extra_params key for a Label Studio personal access token (replaces access_token).
API_KEY_PARAM = "label_studio_api_key"
MAX_TOKEN_CHARS = 500  # LabelStudioBackend.access_token
# ANNOTATIONS_DELETED is what Label Studio sends; ANNOTATION_DELETED is what
# label-studio-ml-backend lists: both are accepted.
TRAIN_EVENTS = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "ANNOTATION_DELETED",
        "START_TRAINING",
    }
)


# --- backends (main API) -------------------------------------------------------------------------


def _interface_for(*, label_config: str, from_name: str, cluster: Cluster | None) -> dict[str, Any]:
    """The stored interface of a label config, checked against the model; {} without config."""
    if not label_config:
        return {}
    try:
        interface = parse_interface(label_config, from_name or None)
    except LabelConfigError as exc:
        raise ValidationFailed.for_field("label_config", str(exc)) from None
    if cluster is not None:
        ModelSpec.of(cluster).check_fits(interface.kind, interface.labels)
    return interface.as_dict()


def _check_binding(cluster: Cluster | None, checkpoint: Checkpoint | None) -> None:
    if checkpoint is not None and cluster is not None:
        runtime.load_weights(cluster, checkpoint)  # ValidationFailed when it does not fit


def _binding_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, details={"cluster_id": [message], "experiment_id": [message]})


def _check_experiment_binding(backend: LabelStudioBackend) -> None:
    """What an experiment-bound backend may not have: a checkpoint (that goes with a model) and
    training on annotations (its runs are trained in the studio)."""
    if backend.experiment_id is None:
        return
    if backend.checkpoint_id is not None:
        raise ValidationFailed.for_field(
            "checkpoint_id", "A checkpoint goes with cluster_id; an experiment serves its runs'."
        )
    if backend.train_on_annotation:
        raise ValidationFailed.for_field(
            "train_on_annotation",
            "A backend bound to an experiment is trained in the training studio, not on "
            "annotations: turn train_on_annotation off.",
        )


def _fit_cluster(backend: LabelStudioBackend) -> Cluster | None:
    """The model a label config is checked against: the bound one, or the model of the run an
    experiment-bound backend serves (None before any run completed: the config is only parsed)."""
    if backend.experiment_id is None:
        return backend.cluster
    run = backend.served_run
    return run.cluster if run is not None else None


def _clean_hosts(hosts) -> list[str]:
    cleaned = []
    for entry in hosts or []:
        try:
            host, port = parse_host_entry(entry)
        except ValueError as exc:
            raise ValidationFailed.for_field("allowed_hosts", str(exc)) from None
        shown = f"[{host}]" if ":" in host else host
        cleaned.append(f"{shown}:{port}" if port else shown)
    return cleaned


def _train_options(params: dict[str, Any] | None) -> dict[str, Any]:
    from ml.training import TrainConfig

    params = dict(params or {})
    if "device" in params:
        raise ValidationFailed.for_field("train_params", "device is chosen by the model's host.")
    try:
        TrainConfig.from_dict({**TRAIN_DEFAULTS, **params})
    except (TypeError, ValueError) as exc:
        raise ValidationFailed.for_field("train_params", str(exc)) from None
    return params


def _credentials(user: str | None, password: str | None) -> tuple[str, str]:
    user, password = user or "", password or ""
    if bool(user) != bool(password):
        raise ValidationFailed.for_field(
            "basic_auth_password", "Give both basic_auth_user and basic_auth_password, or neither."
        )
    return user, hash_backend_password(password) if password else ""


@transaction.atomic
def backend_create(
    *,
    project: Project,
    actor: User | None,
    name: str,
    cluster: Cluster | None = None,
    experiment: Experiment | None = None,
    checkpoint: Checkpoint | None = None,
    label_config: str = "",
    from_name: str = "",
    basic_auth_user: str = "",
    basic_auth_password: str = "",
    allowed_hosts: list[str] | None = None,
    allow_private_networks: bool = False,
    train_on_annotation: bool = False,
    train_params: dict[str, Any] | None = None,
    visibility: str | None = None,
) -> LabelStudioBackend:
    """Create an ML backend of `project` bound to `cluster` (and optionally `checkpoint`) or to
    `experiment` (exactly one of the two)."""
    if cluster is None and experiment is None:
        raise _binding_error("Give cluster_id (a model) or experiment_id (an experiment).")
    if cluster is not None and experiment is not None:
        raise _binding_error("Give cluster_id or experiment_id, not both.")
    for obj, field in (
        (cluster, "cluster_id"),
        (experiment, "experiment_id"),
        (checkpoint, "checkpoint_id"),
    ):
        if obj is not None and obj.project_id != project.pk:
            raise ValidationFailed.for_field(field, "Not found in this project.")
    _check_binding(cluster, checkpoint)
    user, password_hash = _credentials(basic_auth_user, basic_auth_password)
    fields: dict[str, Any] = {"visibility": visibility} if visibility else {}
    backend = LabelStudioBackend(
        project=project,
        owner=actor,
        name=name,
        cluster=cluster,
        experiment=experiment,
        checkpoint=checkpoint,
        label_config=label_config or "",
        from_name=from_name or "",
        basic_auth_user=user,
        basic_auth_password=password_hash,
        allowed_hosts=_clean_hosts(allowed_hosts),
        allow_private_networks=allow_private_networks,
        train_on_annotation=train_on_annotation,
        train_params=_train_options(train_params),
        **fields,
    )
    _check_experiment_binding(backend)
    backend.interface = _interface_for(
        label_config=label_config, from_name=from_name, cluster=_fit_cluster(backend)
    )
    backend.save(force_insert=True)
    return backend


_UPDATABLE = {
    "name",
    "cluster",
    "experiment",
    "checkpoint",
    "label_config",
    "from_name",
    "allowed_hosts",
    "allow_private_networks",
    "train_on_annotation",
    "train_params",
    "visibility",
}


@transaction.atomic
def backend_update(*, backend: LabelStudioBackend, **changes: Any) -> LabelStudioBackend:
    """Change a backend's settings; the label config is re-checked against the (new) model.

    `basic_auth_user` / `basic_auth_password` replace the credentials together ("" clears them).
    Binding a model unbinds the experiment and the other way round (never both in one change);
    binding an experiment also drops the checkpoint.
    """
    backend = LabelStudioBackend.objects.select_for_update().get(pk=backend.pk)
    unknown = set(changes) - _UPDATABLE - {"basic_auth_user", "basic_auth_password"}
    if unknown:
        raise ValidationFailed(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    if changes.get("cluster") is not None and changes.get("experiment") is not None:
        raise _binding_error("Give cluster_id or experiment_id, not both.")
    for obj, field in (
        (changes.get("cluster"), "cluster_id"),
        (changes.get("experiment"), "experiment_id"),
        (changes.get("checkpoint"), "checkpoint_id"),
    ):
        if obj is not None and obj.project_id != backend.project_id:
            raise ValidationFailed.for_field(field, "Not found in this project.")
    if changes.get("experiment") is not None:
        changes["cluster"] = None
        changes.setdefault("checkpoint", None)
    elif changes.get("cluster") is not None:
        changes["experiment"] = None
    if "basic_auth_user" in changes or "basic_auth_password" in changes:
        backend.basic_auth_user, backend.basic_auth_password = _credentials(
            changes.pop("basic_auth_user", None), changes.pop("basic_auth_password", None)
        )
    if "allowed_hosts" in changes:
        changes["allowed_hosts"] = _clean_hosts(changes["allowed_hosts"])
    if "train_params" in changes:
        changes["train_params"] = _train_options(changes["train_params"])
    for name, value in changes.items():
        setattr(backend, name, value)
    backend.__dict__.pop("_served_run", None)
    _check_experiment_binding(backend)
    if {"cluster", "checkpoint"} & set(changes):
        _check_binding(backend.cluster, backend.checkpoint)
    backend.interface = _interface_for(
        label_config=backend.label_config,
        from_name=backend.from_name,
        cluster=_fit_cluster(backend),
    )
    backend.save()
    return backend


def backend_delete(*, backend: LabelStudioBackend) -> None:
    """Delete a backend, its stored annotations and version rows (checkpoints stay)."""
    from apps.tasks.services import task_abort

    for task in _pending_training(backend):
        task_abort(task=task)
    backend.delete()


# --- the gateway: auth ---------------------------------------------------------------------------

# A backend's Basic password is stored as `hmac-sha256$<salt>$<hex>`: HMAC-SHA256 keyed with
# SECRET_KEY and a random per-credential salt. It is a random-looking secret checked on every
# Label Studio request, so it needs a keyed hash (microseconds), not a login password hasher
# (hundreds of milliseconds of CPU per request and per guess). Values stored before are Django
# password hashes: still accepted, and replaced by the keyed hash on their first success.
BACKEND_HASH_ALGORITHM = "hmac-sha256"
_BACKEND_HASH_SALT = "orchard.labelstudio.basic-auth"


def _backend_digest(salt: str, password: str, secret: str) -> str:
    return salted_hmac(
        f"{_BACKEND_HASH_SALT}:{salt}", password, secret=secret, algorithm="sha256"
    ).hexdigest()


def hash_backend_password(password: str) -> str:
    """The stored form of a backend's Basic password (see above)."""
    salt = get_random_string(22)
    return f"{BACKEND_HASH_ALGORITHM}${salt}${_backend_digest(salt, password, settings.SECRET_KEY)}"


def _backend_password_matches(password: str, stored: str) -> tuple[bool, bool]:
    """(whether `password` matches `stored`, whether `stored` should be rewritten)."""
    algorithm, _, rest = stored.partition("$")
    if algorithm != BACKEND_HASH_ALGORITHM:
        return check_password(password, stored), True  # a legacy Django password hash
    salt, _, digest = rest.partition("$")
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(_backend_digest(salt, password, secret).encode(), digest.encode()):
            return True, index > 0  # a rotated SECRET_KEY: rewrite under the current one
    return False, False


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("This ML backend needs HTTP Basic credentials.")
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("Malformed Basic credentials.") from None
    if not sep:
        raise Unauthorized("Malformed Basic credentials.")
    return user, password


def backend_authenticate(
    *, backend: LabelStudioBackend, authorization: str | None, client: str
) -> None:
    """Check the request's Basic credentials when the backend has some; Unauthorized if wrong.

    Every check is throttled per `client` (a `client_ident`) and per backend before it runs
    (AUTH_FAILURE_RATE, see `apps.core.throttling`): past it, CredentialsThrottled (429).
    """
    if not backend.has_credentials:
        return
    user, password = _basic_credentials(authorization or "")
    stored = backend.basic_auth_password
    with credential_attempt(client, account=f"labelstudio:{backend.pk}") as attempt:
        user_ok = hmac.compare_digest(user.encode(), backend.basic_auth_user.encode())
        password_ok, rehash = _backend_password_matches(password, stored)
        if not (user_ok and password_ok):
            raise Unauthorized("Invalid credentials for this ML backend.")
        attempt.succeeded()
    if rehash:
        backend.basic_auth_password = hash_backend_password(password)
        type(backend).objects.filter(pk=backend.pk, basic_auth_password=stored).update(
            basic_auth_password=backend.basic_auth_password
        )


# --- the gateway: setup and predict --------------------------------------------------------------


def _require_cluster(backend: LabelStudioBackend) -> Cluster:
    if backend.cluster is None:
        raise Conflict(
            "This ML backend has no model any more; bind a model or an experiment in Orchard."
        )
    return backend.cluster


def _require_trainable(backend: LabelStudioBackend) -> None:
    if backend.experiment_id is not None:
        raise Conflict(
            "This ML backend serves the runs of an experiment: it is trained in Orchard's "
            "training studio (start a new run of the experiment there), not from Label Studio. "
            "Annotations are still stored."
        )


def _valid_hostname(hostname: Any, allowed_hosts: list[str]) -> str:
    """Label Studio's base URL from /setup; when the backend lists allowed hosts, it must be one
    of them (that pins the Label Studio host against anyone else calling /setup)."""
    if not isinstance(hostname, str):
        raise ValidationFailed.for_field("hostname", "must be a string.")
    hostname = hostname.strip().rstrip("/")
    try:
        origin = url_origin(hostname)
    except ValidationFailed as exc:
        raise ValidationFailed.for_field("hostname", exc.message) from None
    if allowed_hosts and not FetchPolicy(allowed_hosts=tuple(allowed_hosts)).allows(*origin):
        raise ValidationFailed.for_field(
            "hostname", f"{origin[1]} is not among this backend's allowed hosts."
        )
    return hostname


def backend_setup(
    *,
    backend: LabelStudioBackend,
    project: Any = None,
    schema: Any = None,
    hostname: Any = None,
    access_token: Any = None,
    extra_params: Any = None,
) -> dict[str, str]:
    """`/setup`: adopt Label Studio's label config, host and token; answer the model version.

    The token is `extra_params.label_studio_api_key` when the ML backend's Extra params in Label
    Studio give one (a personal access token: Label Studio 1.23 turns legacy tokens off for new
    organizations, and the `access_token` it sends is such a legacy token), else `access_token`.

    Loads nothing (Label Studio gives /setup 3 s): the label config is parsed and checked
    against the model's declared shape only. A config that does not fit changes nothing.
    """
    changes: dict[str, Any] = {"last_setup_at": timezone.now()}
    if schema not in (None, ""):
        if not isinstance(schema, str):
            raise ValidationFailed.for_field("schema", "must be the label config XML.")
        if schema != backend.label_config or not backend.interface:
            cluster = (
                _require_cluster(backend)
                if backend.experiment_id is None
                else _fit_cluster(backend)
            )
            changes["interface"] = _interface_for(
                label_config=schema, from_name=backend.from_name, cluster=cluster
            )
            changes["label_config"] = schema
    if hostname not in (None, ""):
        changes["label_studio_url"] = _valid_hostname(hostname, backend.allowed_hosts)
        if changes["label_studio_url"] != backend.label_studio_url:
            # The stored token belongs to the old host: it must never reach a new one.
            changes["access_token"] = ""
    api_key = extra_params.get(API_KEY_PARAM) if isinstance(extra_params, dict) else None
    if api_key is not None and not (isinstance(api_key, str) and api_key.strip()):
        raise ValidationFailed.for_field(
            "extra_params", f"{API_KEY_PARAM} must be a non-empty string (a Label Studio token)."
        )
    if api_key:
        access_token = api_key.strip()
    if isinstance(access_token, str) and access_token:
        if len(access_token) > MAX_TOKEN_CHARS:
            raise ValidationFailed.for_field(
                "access_token", f"A Label Studio token has at most {MAX_TOKEN_CHARS} characters."
            )
        changes["access_token"] = access_token
    if project not in (None, ""):
        changes["ls_project"] = str(project)[:64]
    LabelStudioBackend.objects.filter(pk=backend.pk).update(**changes)
    return {"model_version": backend.model_version}


def _interface(backend: LabelStudioBackend, label_config: Any = None) -> Interface:
    if isinstance(label_config, str) and label_config and label_config != backend.label_config:
        try:
            return parse_interface(label_config, backend.from_name or None)
        except LabelConfigError as exc:
            raise ValidationFailed.for_field("label_config", str(exc)) from None
    if backend.interface:
        return Interface.from_dict(backend.interface)
    raise ValidationFailed.for_field(
        "label_config", "This backend has no label config yet: call /setup with the schema."
    )


def fetch_policy(backend: LabelStudioBackend, params: dict | None = None) -> FetchPolicy:
    params = params if isinstance(params, dict) else {}
    login, password = params.get("login"), params.get("password")
    basic = (login, password) if isinstance(login, str) and isinstance(password, str) else None
    return FetchPolicy(
        label_studio_url=backend.label_studio_url,
        access_token=backend.access_token,
        allowed_hosts=tuple(backend.allowed_hosts or ()),
        allow_private_networks=backend.allow_private_networks,
        basic_auth=basic if basic and basic[0] else None,
    )


def task_inputs(spec: ModelSpec, interface: Interface, values: list[Any], policy: FetchPolicy):
    """Model inputs for task values (texts, or image URLs / data URIs fetched under `policy`)."""
    if interface.kind == "text":
        return spec.text_batch([str(v) if isinstance(v, int | float) else v for v in values])
    return spec.image_batch([fetch_task_value(v, policy) for v in values])


def _task_value(task: Any, interface: Interface, index: int) -> Any:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise ValidationFailed(f"tasks[{index}] must be an object with a `data` object.")
    value = task["data"].get(interface.data_key)
    if value is None or (interface.kind == "image" and not isinstance(value, str)):
        raise ValidationFailed(
            f"task {task.get('id', index)} has no {interface.data_key!r} in its data."
        )
    if interface.kind == "text" and not isinstance(value, str | int | float):
        raise ValidationFailed(f"task {task.get('id', index)}: {interface.data_key!r} is not text.")
    return value


def _version_weights(backend: LabelStudioBackend, requested: Any):
    """(checkpoint, version name) to predict with: a requested known version, else the current."""
    if isinstance(requested, str) and requested != backend.model_version:
        parts = requested.split(".")
        if len(parts) == 3 and parts[0] == "1" and parts[1].isdigit():
            row = (
                LabelStudioModelVersion.objects.select_related("checkpoint")
                .filter(backend=backend, number=int(parts[1]), checkpoint__isnull=False)
                .first()
            )
            if row is not None:
                return row.checkpoint, row.name
    return backend.checkpoint, backend.model_version


def _run_weights(backend: LabelStudioBackend, requested: Any) -> tuple[Cluster, Checkpoint, str]:
    """(model, checkpoint, version name) of an experiment-bound backend: the best checkpoint of
    a requested run version still served, else of the experiment's latest completed run;
    Conflict when there is none or its model or checkpoint is gone."""
    from apps.core.exceptions import NotFound
    from apps.mlbackend.labelstudio.selectors import served_runs
    from apps.mlbackend.models.labelstudio import run_version_name
    from apps.training.selectors import run_checkpoint_get

    run: Run | None = None
    if isinstance(requested, str) and requested != backend.model_version:
        _head, _sep, run_id = requested.partition("-")
        if run_id:
            run = served_runs(experiment_id=backend.experiment_id).filter(pk=run_id).first()
    run = run or backend.served_run
    if run is None:
        experiment = backend.experiment
        raise Conflict(
            f"The experiment {experiment.name!r} has no completed run yet: start one in the "
            "training studio; this backend predicts with the best checkpoint of its latest "
            "completed run."
            if experiment is not None
            else "This ML backend has no experiment any more; bind a model or an experiment."
        )
    if run.cluster is None:
        raise Conflict(f"The model of run {run.number} of the experiment was deleted.")
    try:
        checkpoint = run_checkpoint_get(run=run, which="best")
    except NotFound:
        raise Conflict(f"Run {run.number} of the experiment has no best checkpoint.") from None
    return run.cluster, checkpoint, run_version_name(run.number, run.pk)


def backend_predict(
    *,
    backend: LabelStudioBackend,
    tasks: Any,
    label_config: Any = None,
    params: Any = None,
    model_version: Any = None,
) -> dict[str, Any]:
    """`/predict`: one prediction per task (a Choices region with its score) and the version."""
    from ml.inference import predict_proba

    if not isinstance(tasks, list) or not tasks:
        raise ValidationFailed.for_field("tasks", "must be a non-empty list of tasks.")
    if len(tasks) > MAX_TASKS_PER_PREDICT:
        raise ValidationFailed.for_field("tasks", f"at most {MAX_TASKS_PER_PREDICT} per request.")
    if backend.experiment_id is not None:
        cluster, checkpoint, version = _run_weights(backend, model_version)
        # The studio trained on inputs times this factor (1 for images, which lie in 0..1).
        scale = float((checkpoint.metadata or {}).get("input_scale") or 1.0)
    else:
        cluster = _require_cluster(backend)
        checkpoint, version = _version_weights(backend, model_version)
        scale = 1.0
    interface = _interface(backend, label_config)
    spec = ModelSpec.of(cluster)
    spec.check_fits(interface.kind, interface.labels)
    values = [_task_value(task, interface, i) for i, task in enumerate(tasks)]
    x = task_inputs(spec, interface, values, fetch_policy(backend, params))
    if scale != 1.0:
        x = x * np.float32(scale)
    probabilities = predict_proba(runtime.cached_model(cluster, checkpoint), x)
    results = []
    for row in probabilities:
        index = int(row.argmax())
        score = float(row[index])
        results.append(
            {
                "result": [
                    {
                        "from_name": interface.from_name,
                        "to_name": interface.to_name,
                        "type": "choices",
                        "value": {"choices": [interface.labels[index]]},
                        "score": score,
                    }
                ],
                "score": score,
                "model_version": version,
            }
        )
    return {"results": results, "model_version": version}


# --- the gateway: annotations, training ----------------------------------------------------------


def label_of(result: Any, interface: Interface | None) -> str:
    """The chosen label of the backend's control in an annotation result ("" when none)."""
    if not isinstance(result, list):
        return ""
    for region in result:
        if not isinstance(region, dict) or region.get("type", "choices") != "choices":
            continue
        if interface is not None and region.get("from_name") != interface.from_name:
            continue
        choices = (
            (region.get("value") or {}).get("choices")
            if isinstance(region.get("value"), dict)
            else None
        )
        if isinstance(choices, list) and choices and isinstance(choices[0], str):
            return choices[0][:500]
    return ""


def _ls_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{what} must be an integer id.")
    return value


def _stored_interface(backend: LabelStudioBackend) -> Interface | None:
    return Interface.from_dict(backend.interface) if backend.interface else None


def _upsert(
    backend: LabelStudioBackend,
    annotation: Any,
    task: Any,
    ls_project: str,
    interface: Interface | None,
) -> LabelStudioAnnotation:
    if not isinstance(annotation, dict):
        raise ValidationFailed("`annotation` must be an object.")
    annotation_id = _ls_id(annotation.get("id"), "annotation.id")
    task = task if isinstance(task, dict) else {}
    task_id = annotation.get("task", task.get("id"))
    task_id = task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else None
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise ValidationFailed("annotation.result must be a list.")
    defaults: dict[str, Any] = {
        "task_id": task_id,
        "ls_project": ls_project,
        "result": result,
        "label": label_of(result, interface),
        "was_cancelled": bool(annotation.get("was_cancelled", False)),
    }
    if isinstance(task.get("data"), dict):
        defaults["task_data"] = task["data"]
    row, _ = LabelStudioAnnotation.objects.update_or_create(
        backend=backend, annotation_id=annotation_id, defaults=defaults
    )
    return row


def _ls_project_id(project: Any) -> str:
    if isinstance(project, dict):
        project = project.get("id", "")
    return str(project if project is not None else "")[:64]


@transaction.atomic
def backend_webhook(*, backend: LabelStudioBackend, payload: Any) -> tuple[int, dict[str, Any]]:
    """`/webhook`: store/delete annotations or start training; (HTTP status, answer)."""
    if not isinstance(payload, dict):
        raise ValidationFailed("The webhook body must be a JSON object.")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise ValidationFailed.for_field("action", "is required.")
    if action not in TRAIN_EVENTS:
        return 200, {"status": "Unknown event"}
    ls_project = _ls_project_id(payload.get("project"))
    interface = _stored_interface(backend)
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        row = _upsert(
            backend, payload.get("annotation"), payload.get("task"), ls_project, interface
        )
        result: dict[str, Any] = {
            "annotation_id": row.annotation_id,
            "label": row.label,
            "annotations": backend.annotations.count(),
        }
        if backend.train_on_annotation and row.label and backend.experiment_id is None:
            task, _created = backend_train_start(backend=backend, actor=backend.owner)
            result["job"] = str(task.pk)
        return 201, {"result": result, "status": "ok"}
    if action in ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED"):
        items = payload.get("annotations")
        if action == "ANNOTATION_DELETED" or items is None:
            items = [payload.get("annotation")]
        if not isinstance(items, list):
            raise ValidationFailed("`annotations` must be a list.")
        ids = [
            _ls_id((a or {}).get("id") if isinstance(a, dict) else None, "annotation id")
            for a in items
        ]
        deleted, _ = LabelStudioAnnotation.objects.filter(
            backend=backend, annotation_id__in=ids
        ).delete()
        return 201, {"result": {"deleted": deleted}, "status": "ok"}
    task, _created = backend_train_start(backend=backend, actor=backend.owner)
    return 201, {
        "result": {"job": str(task.pk), "model_version": backend.model_version},
        "status": "ok",
    }


@transaction.atomic
def backend_train_legacy(*, backend: LabelStudioBackend, payload: Any) -> dict[str, Any]:
    """Old `/train`: tasks with their annotations -> store them, start training -> {"job"}."""
    if not isinstance(payload, dict):
        raise ValidationFailed("The body must be a JSON object.")
    _require_trainable(backend)
    tasks = payload.get("annotations")
    if not isinstance(tasks, list) or not tasks:
        raise ValidationFailed("No annotations found.")
    ls_project = _ls_project_id(payload.get("project"))
    interface = _stored_interface(backend)
    for task in tasks:
        if not isinstance(task, dict):
            raise ValidationFailed("Each item of `annotations` must be a task object.")
        for annotation in task.get("annotations") or []:
            _upsert(backend, annotation, task, ls_project, interface)
    task, _created = backend_train_start(backend=backend, actor=backend.owner)
    return {"job": str(task.pk)}


def _pending_training(backend: LabelStudioBackend):
    from apps.tasks.models import PENDING_STATES, Task

    return Task.objects.filter(
        kind=TRAIN_KIND,
        project_id=backend.project_id,
        params__backend_id=backend.pk,
        state__in=PENDING_STATES,
    ).order_by("-created_at")


def backend_train_start(
    *, backend: LabelStudioBackend, actor: User | None, reuse_pending: bool = True
) -> tuple[Task, bool]:
    """Enqueue a training task on the backend's annotations; (task, created).

    A backend trains one run at a time: with `reuse_pending` the queued or active run is
    answered instead (Label Studio's button may be pressed twice), otherwise TrainingInProgress.
    Refuses (ValidationFailed) when no stored annotation has a label of the backend's control,
    and (Conflict) an experiment-bound backend: its runs are trained in the training studio.
    """
    from apps.tasks.services import task_create

    _require_trainable(backend)
    cluster = _require_cluster(backend)
    with transaction.atomic():
        backend = LabelStudioBackend.objects.select_for_update().get(pk=backend.pk)
        pending = _pending_training(backend).first()
        if pending is not None:
            if reuse_pending:
                return pending, False
            raise TrainingInProgress("This backend is already training.")
        interface = _stored_interface(backend)
        if interface is None:
            raise ValidationFailed("This backend has no label config yet: call /setup first.")
        usable = [
            row.id
            for row in backend.annotations.filter(was_cancelled=False).only("id", "result")
            if label_of(row.result, interface) in interface.labels
        ]
        if not usable:
            raise ValidationFailed("No annotations found.")
        task = task_create(
            project=backend.project,
            actor=actor,
            kind=TRAIN_KIND,
            name=f"Label Studio: {backend.name}"[:200],
            cluster=cluster,
            params={"backend_id": backend.pk},
        )
    return task, True


def backend_training_status(*, backend: LabelStudioBackend) -> dict[str, Any]:
    """`/is_training`: whether a run is queued or active, and the latest run's state."""
    from apps.tasks.models import Task

    latest = (
        Task.objects.filter(
            kind=TRAIN_KIND, project_id=backend.project_id, params__backend_id=backend.pk
        )
        .order_by("-created_at")
        .only("id", "state", "progress", "error")
        .first()
    )
    pending = latest is not None and not latest.is_terminal
    return {
        "is_training": pending,
        "model_version": backend.model_version,
        "job": str(latest.pk) if latest else None,
        "status": latest.state if latest else None,
        "progress": latest.progress if latest else None,
    }


def version_record(
    *,
    backend: LabelStudioBackend,
    cluster: Cluster,
    model,
    actor: User | None,
    task: Task | None,
    labels: list[str],
    metrics: dict[str, Any],
) -> LabelStudioModelVersion:
    """Store trained weights as the backend's next version: the model's weights, a checkpoint,
    a version row, and the backend pointing at it."""
    from apps.clusters.runtime import cluster_store_weights
    from apps.clusters.services import checkpoint_save

    with transaction.atomic():
        locked = LabelStudioBackend.objects.select_for_update().get(pk=backend.pk)
        number = locked.version + 1
        cluster_store_weights(cluster, model)
        checkpoint = checkpoint_save(
            cluster=cluster, actor=actor, name=f"{locked.name} {model_version_name(number)}"[:200]
        )
        row = LabelStudioModelVersion.objects.create(
            backend=locked,
            number=number,
            checkpoint=checkpoint,
            task=task,
            labels=labels,
            metrics=metrics,
        )
        locked.version = number
        locked.checkpoint = checkpoint
        locked.save(update_fields=["version", "checkpoint", "updated_at"])
    return row
