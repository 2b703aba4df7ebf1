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
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string, salted_hmac

from apps.core.conf import number_setting
from apps.core.exceptions import (
    Conflict,
    TrainingInProgress,
    Unauthorized,
    ValidationFailed,
)
from apps.core.throttling import credential_attempt
from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.batch import batch_inputs, predict_deadline
from apps.mlbackend.labelstudio.connect import check_label_studio, ls_project_key
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
    LabelStudioProject,
)
from apps.mlbackend.models.labelstudio import model_version_name

if TYPE_CHECKING:
    from apps.accounts.models import Project, User
    from apps.clusters.models import Checkpoint, Cluster
    from apps.tasks.models import Task
    from apps.training.models import Experiment, Run

logger = logging.getLogger(__name__)

# What serves one Label Studio project: the backend itself (its first project) or the row of a
# further project (see LabelStudioProject).
Scope = LabelStudioBackend | LabelStudioProject

TRAIN_KIND = "labelstudio_train"
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "optimizer": "adam",
    "scheduler": "cosine",
    "seed": 0,
}
# Without `epochs` in a backend's train_params, a run takes at least this many optimizer steps
# (more epochs for few annotations: 30 epochs of 50 annotations were 120 steps, far from
# converged), at most AUTO_MAX_EPOCHS epochs. Measured in bench/labelstudio.py.
AUTO_MIN_STEPS = 600
AUTO_MAX_EPOCHS = 500
MAX_ERRORS_KEPT = 50
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
def backend_create(  # noqa: PLR0913
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
        base_checkpoint=checkpoint,
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
        backend.base_checkpoint = backend.checkpoint
    backend.interface = _interface_for(
        label_config=backend.label_config,
        from_name=backend.from_name,
        cluster=_fit_cluster(backend),
    )
    backend.save()
    return backend


@transaction.atomic
def backend_delete(*, backend: LabelStudioBackend) -> None:
    """Delete a backend, its stored annotations and version rows, and the models it made for
    its further Label Studio projects (checkpoints stay; the model bound to it stays)."""
    from apps.clusters.services import cluster_delete
    from apps.tasks.services import task_abort

    for task in _pending_training(backend):
        task_abort(task=task)
    clones = [row.cluster for row in backend.ls_projects.select_related("cluster") if row.cluster]
    backend.delete()
    for cluster in clones:
        cluster_delete(cluster=cluster)


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
    *,
    backend: LabelStudioBackend,
    authorization: str | None,
    client: str,
    secret: str | None = None,
    webhook: bool = False,
) -> None:
    """Check the request's credentials when the backend has some; Unauthorized if wrong.

    `secret` is the one of the secret URL (`/ml/<id>/s/<secret>/...`, None on the plain URL): a
    wrong one is refused on every route; the right one is enough for a `webhook` (Label Studio
    sends webhooks without Basic credentials), every other route still needs the backend's
    Basic credentials. Every check is throttled per `client` (a `client_ident`) and per backend
    before it runs (AUTH_FAILURE_RATE, see `apps.core.throttling`): past it, 429.
    """
    if secret is not None:
        with credential_attempt(client, account=f"labelstudio:{backend.pk}") as attempt:
            if not hmac.compare_digest(secret.encode(), backend.webhook_secret.encode()):
                raise Unauthorized("Invalid secret URL for this ML backend.")
            attempt.succeeded()
        if webhook:
            return
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


def _project_limit() -> int:
    return int(number_setting("LABELSTUDIO_MAX_PROJECTS"))


def _project_create(backend: LabelStudioBackend, key: str) -> LabelStudioProject:
    """A further Label Studio project of `backend`, with its own model: a copy of the backend's
    model (same architecture and seed, so the same initial weights) starting from the backend's
    `base_checkpoint`. Conflict past LABELSTUDIO_MAX_PROJECTS or without a model."""
    from apps.clusters.models import Cluster

    with transaction.atomic():
        locked = LabelStudioBackend.objects.select_for_update().get(pk=backend.pk)
        row = LabelStudioProject.objects.filter(backend=locked, ls_project=key).first()
        if row is not None:
            return row
        if LabelStudioProject.objects.filter(backend=locked).count() + 1 >= _project_limit():
            raise Conflict(
                f"This ML backend already serves {_project_limit()} Label Studio projects "
                "(LABELSTUDIO_MAX_PROJECTS): create another backend in Orchard for this one."
            )
        model = _require_cluster(locked)
        clone = Cluster.objects.create(
            project_id=locked.project_id,
            owner_id=locked.owner_id,
            name=f"{model.name} (Label Studio project {key})"[:200],
            template=model.template,
            shape=model.shape,
            source=model.source,
            config=model.config,
            host=model.host,
            visibility=locked.visibility,
        )
        return LabelStudioProject.objects.create(
            backend=locked, ls_project=key, cluster=clone, checkpoint=locked.base_checkpoint
        )


def scope_for(backend: LabelStudioBackend, ls_project: Any, *, create: bool = True) -> Scope | None:
    """What serves the Label Studio project `ls_project` (as Label Studio names it) on `backend`.

    The backend itself serves its first project (the first to call /setup), requests that name
    no project, and every project of an experiment-bound backend (the experiment is its model).
    Any other project is served by its own LabelStudioProject row, created on its first request
    when `create` (else None when it has none yet).
    """
    key = ls_project_key(ls_project)
    primary = ls_project_key(backend.ls_project)
    if backend.experiment_id is not None or not key or not primary or key == primary:
        return backend
    row = (
        LabelStudioProject.objects.select_related("cluster", "checkpoint")
        .filter(backend=backend, ls_project=key)
        .first()
    )
    if row is None and create:
        row = _project_create(backend, key)
    if row is not None:
        row.backend = backend
    return row


def _scope_key(backend: LabelStudioBackend, scope: Scope) -> str:
    """The Label Studio project key a scope's tasks and annotations carry ("" for the first)."""
    return scope.ls_project if isinstance(scope, LabelStudioProject) else ""


def _setup_changes(
    backend: LabelStudioBackend,
    scope: Scope,
    *,
    project: Any,
    schema: Any,
    hostname: Any,
    access_token: Any,
    extra_params: Any,
) -> dict[str, Any]:
    """What /setup changes on `scope`, checked (label config, host, token against Label
    Studio); raises before anything is stored."""
    changes: dict[str, Any] = {"last_setup_at": timezone.now()}
    interface = _stored_interface(scope)
    if schema not in (None, ""):
        if not isinstance(schema, str):
            raise ValidationFailed.for_field("schema", "must be the label config XML.")
        if schema != scope.label_config or not scope.interface:
            cluster = (
                _require_cluster(scope) if backend.experiment_id is None else _fit_cluster(backend)
            )
            changes["interface"] = _interface_for(
                label_config=schema, from_name=backend.from_name, cluster=cluster
            )
            changes["label_config"] = schema
            interface = Interface.from_dict(changes["interface"])
    if hostname not in (None, ""):
        changes["label_studio_url"] = _valid_hostname(hostname, backend.allowed_hosts)
        if changes["label_studio_url"] != scope.label_studio_url:
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
    if scope is backend and ls_project_key(project):
        changes["ls_project"] = str(project)[:64]
    policy = fetch_policy(scope)
    policy = FetchPolicy(
        label_studio_url=changes.get("label_studio_url", policy.label_studio_url),
        access_token=changes.get("access_token", policy.access_token),
        allowed_hosts=policy.allowed_hosts,
        allow_private_networks=policy.allow_private_networks,
    )
    check_label_studio(
        policy=policy,
        ls_project=ls_project_key(project),
        needs_downloads=interface is not None and interface.kind in ("image", "detection"),
        api_key_given=bool(api_key),
        report_unreachable=backend.has_credentials or not backend.allow_private_networks,
    )
    return changes


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
    The token is then checked against Label Studio (`connect.check_label_studio`): a refused one
    fails the connection with the fix, which Label Studio shows in its connect dialog.

    The first Label Studio project set up is the backend's own; another project gets its own
    label config and model (see `scope_for`). Loads no model (Label Studio gives /setup 3 s):
    the label config is parsed and checked against the model's declared shape only. A config
    that does not fit, or a failed check, changes nothing.
    """
    new_project = scope_for(backend, project, create=False) is None
    scope = scope_for(backend, project)
    try:
        changes = _setup_changes(
            backend,
            scope,
            project=project,
            schema=schema,
            hostname=hostname,
            access_token=access_token,
            extra_params=extra_params,
        )
    except Exception:
        if new_project and isinstance(scope, LabelStudioProject):
            # A project whose first /setup failed leaves nothing behind (its model included).
            from apps.clusters.services import cluster_delete

            clone = scope.cluster
            scope.delete()
            if clone is not None:
                cluster_delete(cluster=clone)
        raise
    type(scope).objects.filter(pk=scope.pk).update(**changes)
    for name, value in changes.items():
        setattr(scope, name, value)
    return {"model_version": scope.model_version}


def _interface(scope: Scope, label_config: Any = None) -> Interface:
    if isinstance(label_config, str) and label_config and label_config != scope.label_config:
        try:
            return parse_interface(label_config, scope.from_name or None)
        except LabelConfigError as exc:
            raise ValidationFailed.for_field("label_config", str(exc)) from None
    if scope.interface:
        return Interface.from_dict(scope.interface)
    raise ValidationFailed.for_field(
        "label_config", "This backend has no label config yet: call /setup with the schema."
    )


def fetch_policy(scope: Scope, params: dict | None = None) -> FetchPolicy:
    params = params if isinstance(params, dict) else {}
    login, password = params.get("login"), params.get("password")
    basic = (login, password) if isinstance(login, str) and isinstance(password, str) else None
    return FetchPolicy(
        label_studio_url=scope.label_studio_url,
        access_token=scope.access_token,
        allowed_hosts=tuple(scope.allowed_hosts or ()),
        allow_private_networks=scope.allow_private_networks,
        basic_auth=basic if basic and basic[0] else None,
    )


def task_inputs(spec: ModelSpec, interface: Interface, values: list[Any], policy: FetchPolicy):
    """Model inputs for task values (texts, or image URLs / data URIs fetched under `policy`)."""
    if interface.kind == "text":
        return spec.text_batch([str(v) if isinstance(v, int | float) else v for v in values])
    return spec.image_batch([fetch_task_value(v, policy) for v in values])


def _versions_of(backend: LabelStudioBackend, scope: Scope):
    rows = LabelStudioModelVersion.objects.filter(backend=backend)
    if isinstance(scope, LabelStudioProject):
        return rows.filter(ls_project=scope)
    return rows.filter(ls_project__isnull=True)


def _version_weights(backend: LabelStudioBackend, scope: Scope, requested: Any):
    """(checkpoint, version name) to predict with: a requested known version, else the current."""
    if isinstance(requested, str) and requested != scope.model_version:
        parts = requested.split(".")
        if len(parts) == 3 and parts[0] == "1" and parts[1].isdigit():
            row = (
                _versions_of(backend, scope)
                .select_related("checkpoint")
                .filter(number=int(parts[1]), checkpoint__isnull=False)
                .first()
            )
            if row is not None:
                return row.checkpoint, row.name
    return scope.checkpoint, scope.model_version


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


def _record_predict(scope: Scope, tasks: list[Any], errors: dict[int, str], seconds: float):
    """Keep the batch's figures and its failed tasks (with their reasons) on the scope, where
    the main API shows them (`last_predict`), and log the failures."""
    failed = []
    for index, error in sorted(errors.items()):
        task = tasks[index]
        task_id = task.get("id") if isinstance(task, dict) else None
        failed.append({"task_id": task_id if isinstance(task_id, int) else None, "error": error})
    if failed:
        logger.warning(
            "Label Studio backend %s: %d of %d tasks got no prediction (first: task %s: %s)",
            scope.pk,
            len(failed),
            len(tasks),
            failed[0]["task_id"],
            failed[0]["error"],
        )
    report = {
        "at": timezone.now().isoformat(),
        "tasks": len(tasks),
        "predicted": len(tasks) - len(failed),
        "failed": len(failed),
        "seconds": round(seconds, 3),
        "errors": failed[:MAX_ERRORS_KEPT],
    }
    type(scope).objects.filter(pk=scope.pk).update(last_predict=report)


def _predict_spans(model, spec: ModelSpec, interface: Interface, tasks: list[Any], version: str):
    """Named entities of every task's text: (one item per task, {index: error}). A text
    without entities gets an empty `result` with its version (it was predicted)."""
    from apps.mlbackend.labelstudio.batch import TaskError, task_value
    from ml.inference import predict_proba
    from ml.ner import spans_from_tokens, tokenize

    errors: dict[int, str] = {}
    texts: dict[int, str] = {}
    for index, task in enumerate(tasks):
        try:
            value = task_value(task, interface, index)
        except TaskError as exc:
            errors[index] = exc.message
            continue
        texts[index] = value if isinstance(value, str) else str(value)
    tokens = {index: tokenize(text) for index, text in texts.items()}
    order = [index for index in sorted(tokens) if tokens[index]]
    probabilities = {}
    if order:
        x = np.concatenate([spec.token_batch(tokens[index]) for index in order])
        rows = predict_proba(model, x)
        offset = 0
        for index in order:
            probabilities[index] = rows[offset : offset + len(tokens[index])]
            offset += len(tokens[index])
    results: list[dict[str, Any]] = []
    for index in range(len(tasks)):
        if index in errors:
            results.append({"result": [], "score": 0.0, "error": errors[index]})
            continue
        spans = (
            spans_from_tokens(texts[index], tokens[index], probabilities[index], interface.labels)
            if index in probabilities
            else []
        )
        regions = [
            {
                "from_name": interface.from_name,
                "to_name": interface.to_name,
                "type": "labels",
                "value": {
                    "start": span["start"],
                    "end": span["end"],
                    "text": span["text"],
                    "labels": [span["label"]],
                },
                "score": span["score"],
            }
            for span in spans
        ]
        score = float(np.mean([span["score"] for span in spans])) if spans else 0.0
        results.append({"result": regions, "score": score, "model_version": version})
    return results, errors


def detection_grid() -> int:
    """Cells per side an image is cut into for detection (`LABELSTUDIO_DETECTION_GRID`)."""
    return max(1, min(32, int(number_setting("LABELSTUDIO_DETECTION_GRID"))))


def _predict_boxes(model, spec, interface, tasks, version, policy, deadline):
    """Rectangles of every task's image: (one item per task, {index: error}); images fetched
    like classification's (`batch.py`), each cut into grid cells the model classifies."""
    from ml.detection import boxes_from_cells, grid_patches
    from ml.inference import predict_proba

    grid = detection_grid()
    x, order, errors = batch_inputs(spec.grid(grid), interface, tasks, policy, deadline=deadline)
    results: list[dict[str, Any]] = [
        {"result": [], "score": 0.0, "error": errors.get(i, "")} for i in range(len(tasks))
    ]
    if x is None:
        return results, errors
    cells = grid * grid
    probabilities = predict_proba(model, np.concatenate([grid_patches(image, grid) for image in x]))
    for n, index in enumerate(order):
        boxes = boxes_from_cells(probabilities[n * cells : (n + 1) * cells], interface.labels, grid)
        regions = [
            {
                "from_name": interface.from_name,
                "to_name": interface.to_name,
                "type": "rectanglelabels",
                "value": {
                    "x": box["x"],
                    "y": box["y"],
                    "width": box["width"],
                    "height": box["height"],
                    "rotation": 0,
                    "rectanglelabels": [box["label"]],
                },
                "score": box["score"],
            }
            for box in boxes
        ]
        score = float(np.mean([box["score"] for box in boxes])) if boxes else 0.0
        results[index] = {"result": regions, "score": score, "model_version": version}
    return results, errors


def backend_predict(
    *,
    backend: LabelStudioBackend,
    tasks: Any,
    label_config: Any = None,
    params: Any = None,
    model_version: Any = None,
    project: Any = None,
) -> dict[str, Any]:
    """`/predict`: one item per task, in order. A task that could be predicted gets a Choices
    region with its score; one that could not (no data, refused or unreadable data, not fetched
    before the batch's deadline) gets an empty `result` and its `error`, and no
    `model_version` (so that Label Studio predicts it again later), while the others of the
    batch keep theirs. Task data is fetched concurrently (see `batch.py`)."""
    from ml.inference import predict_proba

    started = time.monotonic()
    deadline = predict_deadline()
    if not isinstance(tasks, list) or not tasks:
        raise ValidationFailed.for_field("tasks", "must be a non-empty list of tasks.")
    scope = scope_for(backend, project)
    if backend.experiment_id is not None:
        cluster, checkpoint, version = _run_weights(backend, model_version)
        # The studio trained on inputs times this factor (1 for images, which lie in 0..1).
        scale = float((checkpoint.metadata or {}).get("input_scale") or 1.0)
    else:
        cluster = _require_cluster(scope)
        checkpoint, version = _version_weights(backend, scope, model_version)
        scale = 1.0
    interface = _interface(scope, label_config)
    spec = ModelSpec.of(cluster)
    spec.check_fits(interface.kind, interface.labels)
    if interface.kind in ("ner", "detection"):
        model = runtime.cached_model(cluster, checkpoint)
        if interface.kind == "ner":
            results, errors = _predict_spans(model, spec, interface, tasks, version)
        else:
            policy = fetch_policy(scope, params)
            results, errors = _predict_boxes(
                model, spec, interface, tasks, version, policy, deadline
            )
        _record_predict(scope, tasks, errors, time.monotonic() - started)
        return {"results": results, "model_version": version}
    x, order, errors = batch_inputs(
        spec, interface, tasks, fetch_policy(scope, params), deadline=deadline
    )
    results: list[dict[str, Any]] = [
        {"result": [], "score": 0.0, "error": errors.get(i, "")} for i in range(len(tasks))
    ]
    if x is not None:
        if scale != 1.0:
            x = x * np.float32(scale)
        probabilities = predict_proba(runtime.cached_model(cluster, checkpoint), x)
        for index, row in zip(order, probabilities, strict=True):
            label = int(row.argmax())
            score = float(row[label])
            results[index] = {
                "result": [
                    {
                        "from_name": interface.from_name,
                        "to_name": interface.to_name,
                        "type": "choices",
                        "value": {"choices": [interface.labels[label]]},
                        "score": score,
                    }
                ],
                "score": score,
                "model_version": version,
            }
    _record_predict(scope, tasks, errors, time.monotonic() - started)
    return {"results": results, "model_version": version}


# --- the gateway: annotations, training ----------------------------------------------------------


def spans_of(result: Any, interface: Interface) -> list[tuple[int, int, str]]:
    """The entity spans `(start, end, label)` of the interface's Labels control in a result."""
    spans = []
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, dict) or region.get("type") != "labels":
            continue
        if region.get("from_name") != interface.from_name:
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        start, end, labels = value.get("start"), value.get("end"), value.get("labels")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            continue
        if isinstance(labels, list) and labels and isinstance(labels[0], str) and start < end:
            spans.append((start, end, labels[0][:500]))
    return spans


def rectangles_of(
    result: Any, interface: Interface
) -> list[tuple[float, float, float, float, str]]:
    """The rectangles `(x, y, width, height, label)` (percent) of the interface's
    RectangleLabels control in a result (rotated ones are taken unrotated)."""
    found = []
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        if region.get("from_name") != interface.from_name:
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        numbers = [value.get(k) for k in ("x", "y", "width", "height")]
        labels = value.get("rectanglelabels")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            continue
        if not (isinstance(labels, list) and labels and isinstance(labels[0], str)):
            continue
        x, y, width, height = (float(v) for v in numbers)
        if width > 0 and height > 0:
            found.append((x, y, width, height, labels[0][:500]))
    return found


def label_of(result: Any, interface: Interface | None) -> str:
    """The chosen label of the backend's control in an annotation result ("" when none); for
    named entities, the label of its first span."""
    if not isinstance(result, list):
        return ""
    if interface is not None and interface.kind == "ner":
        spans = spans_of(result, interface)
        return spans[0][2] if spans else ""
    if interface is not None and interface.kind == "detection":
        rectangles = rectangles_of(result, interface)
        return rectangles[0][4] if rectangles else ""
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


def _stored_interface(scope: Scope) -> Interface | None:
    return Interface.from_dict(scope.interface) if scope.interface else None


def annotation_upsert(
    *,
    backend: LabelStudioBackend,
    annotation: Any,
    task: Any,
    ls_project: str,
    interface: Interface | None,
) -> LabelStudioAnnotation:
    """Store (or update) one Label Studio annotation with its task's data."""
    if not isinstance(annotation, dict):
        raise ValidationFailed("`annotation` must be an object.")
    annotation_id = _ls_id(annotation.get("id"), "annotation.id")
    task = task if isinstance(task, dict) else {}
    task_id = annotation.get("task", task.get("id"))
    if isinstance(task_id, dict):  # the export nests nothing here, but be lenient
        task_id = task_id.get("id")
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


def scope_annotations(backend: LabelStudioBackend, scope: Scope):
    """The stored annotations of the scope's Label Studio project (the backend's first project
    also owns those that named no project, and those stored before projects were kept apart)."""
    from django.db.models import Q

    if isinstance(scope, LabelStudioProject):
        key = scope.ls_project
        return backend.annotations.filter(Q(ls_project=key) | Q(ls_project__startswith=f"{key}."))
    others = list(
        LabelStudioProject.objects.filter(backend=backend).values_list("ls_project", flat=True)
    )
    rows = backend.annotations.all()
    for key in others:
        rows = rows.exclude(Q(ls_project=key) | Q(ls_project__startswith=f"{key}."))
    return rows


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
    key = ls_project_key(payload.get("project"))
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
    scope = scope_for(backend, key)
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        row = annotation_upsert(
            backend=backend,
            annotation=payload.get("annotation"),
            task=payload.get("task"),
            ls_project=_scope_key(backend, scope) or key,
            interface=_stored_interface(scope),
        )
        result: dict[str, Any] = {
            "annotation_id": row.annotation_id,
            "label": row.label,
            "annotations": scope_annotations(backend, scope).count(),
        }
        if backend.train_on_annotation and row.label and backend.experiment_id is None:
            task, _created = backend_train_start(backend=backend, actor=backend.owner, scope=scope)
            result["job"] = str(task.pk)
        return 201, {"result": result, "status": "ok"}
    task, _created = backend_train_start(backend=backend, actor=backend.owner, scope=scope)
    return 201, {
        "result": {"job": str(task.pk), "model_version": scope.model_version},
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
    key = ls_project_key(payload.get("project"))
    scope = scope_for(backend, key)
    interface = _stored_interface(scope)
    for task in tasks:
        if not isinstance(task, dict):
            raise ValidationFailed("Each item of `annotations` must be a task object.")
        for annotation in task.get("annotations") or []:
            annotation_upsert(
                backend=backend,
                annotation=annotation,
                task=task,
                ls_project=_scope_key(backend, scope) or key,
                interface=interface,
            )
    task, _created = backend_train_start(backend=backend, actor=backend.owner, scope=scope)
    return {"job": str(task.pk)}


def _pending_training(backend: LabelStudioBackend, scope: Scope | None = None):
    """Queued or active training runs of the backend (of one scope when given)."""
    from apps.tasks.models import PENDING_STATES, Task

    rows = Task.objects.filter(
        kind=TRAIN_KIND,
        project_id=backend.project_id,
        params__backend_id=backend.pk,
        state__in=PENDING_STATES,
    ).order_by("-created_at")
    if scope is None:
        return rows
    return [t for t in rows if (t.params or {}).get("ls_project", "") == _scope_key(backend, scope)]


def _can_fetch_annotations(backend: LabelStudioBackend, scope: Scope) -> bool:
    key = _scope_key(backend, scope) or ls_project_key(backend.ls_project)
    return bool(scope.label_studio_url and scope.access_token and key.isdigit())


def backend_train_start(
    *,
    backend: LabelStudioBackend,
    actor: User | None,
    reuse_pending: bool = True,
    scope: Scope | None = None,
) -> tuple[Task, bool]:
    """Enqueue a training task for one Label Studio project of the backend (by default its
    first); (task, created).

    The run trains on the project's annotations stored from webhooks and on those it reads from
    Label Studio's API when it starts (see handlers.py). A scope trains one run at a time: with
    `reuse_pending` the queued or active run is answered instead (Label Studio's button may be
    pressed twice), otherwise TrainingInProgress. Refuses (ValidationFailed) when no stored
    annotation has a label of the project's config and Label Studio's API cannot be asked, and
    (Conflict) an experiment-bound backend: its runs are trained in the training studio.
    """
    from apps.clusters.services import cluster_task_create

    _require_trainable(backend)
    scope = scope or backend
    cluster = _require_cluster(scope)
    with transaction.atomic():
        locked = LabelStudioBackend.objects.select_for_update().get(pk=backend.pk)
        if isinstance(scope, LabelStudioBackend):
            backend = scope = locked
        else:
            scope.refresh_from_db()
        pending = next(iter(_pending_training(backend, scope)), None)
        if pending is not None:
            if reuse_pending:
                return pending, False
            raise TrainingInProgress("This backend is already training.")
        interface = _stored_interface(scope)
        if interface is None:
            raise ValidationFailed("This backend has no label config yet: call /setup first.")
        usable = any(
            label_of(row.result, interface) in interface.labels
            for row in scope_annotations(backend, scope)
            .filter(was_cancelled=False)
            .only("id", "result")
        )
        if not usable and not _can_fetch_annotations(backend, scope):
            raise ValidationFailed("No annotations found.")
        params: dict[str, Any] = {"backend_id": backend.pk}
        if _scope_key(backend, scope):
            params["ls_project"] = _scope_key(backend, scope)
        task = cluster_task_create(
            project=backend.project,
            actor=actor,
            kind=TRAIN_KIND,
            name=f"Label Studio: {backend.name}"[:200],
            cluster=cluster,
            params=params,
        )
    return task, True


def backend_training_status(*, backend: LabelStudioBackend, project: Any = None) -> dict[str, Any]:
    """`/is_training`: whether a run is queued or active, and the latest run's state."""
    from apps.tasks.models import Task

    scope = scope_for(backend, project, create=False) or backend
    key = _scope_key(backend, scope)
    runs = Task.objects.filter(
        kind=TRAIN_KIND, project_id=backend.project_id, params__backend_id=backend.pk
    ).order_by("-created_at")
    latest = None
    for task in runs.only("id", "state", "progress", "error", "params")[:200]:
        if (task.params or {}).get("ls_project", "") == key:
            latest = task
            break
    pending = latest is not None and not latest.is_terminal
    return {
        "is_training": pending,
        "model_version": scope.model_version,
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
    scope: Scope | None = None,
) -> LabelStudioModelVersion:
    """Store trained weights as the scope's next version (by default the backend's first
    project): the model's weights, a checkpoint, a version row, and the scope pointing at it."""
    from apps.clusters.runtime import cluster_store_weights
    from apps.clusters.services import checkpoint_save

    scope = scope or backend
    with transaction.atomic():
        locked = type(scope).objects.select_for_update().get(pk=scope.pk)
        number = locked.version + 1
        cluster_store_weights(cluster, model)
        suffix = f" project {locked.ls_project}" if isinstance(locked, LabelStudioProject) else ""
        checkpoint = checkpoint_save(
            cluster=cluster,
            actor=actor,
            name=f"{backend.name}{suffix} {model_version_name(number)}"[:200],
        )
        row = LabelStudioModelVersion.objects.create(
            backend=backend,
            ls_project=locked if isinstance(locked, LabelStudioProject) else None,
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
