"""Writes of the Label Studio half: backends (main API) and the protocol's /setup, with what
the gateway's other routes share (a request's scope, interface and fetch policy).

The gateway (`views.py`) resolves a backend with `selectors.backend_for_gateway`, checks its
Basic credentials with `auth.backend_authenticate`, and calls one service per route: /setup
here, /predict in `predict.py`, /webhook and /train in `training.py`. Every answer is already in
the protocol's shapes (the view only serializes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.core.conf import number_setting
from apps.core.exceptions import (
    Conflict,
    ValidationFailed,
)
from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.auth import hash_backend_password
from apps.mlbackend.labelstudio.connect import check_label_studio, ls_project_key
from apps.mlbackend.labelstudio.features import ModelSpec
from apps.mlbackend.labelstudio.fetch import (
    FetchPolicy,
    KeepAlive,
    fetch_task_value,
    parse_host_entry,
    url_origin,
)
from apps.mlbackend.labelstudio.label_config import Interface, LabelConfigError, parse_interface
from apps.mlbackend.models import (
    LabelStudioBackend,
    LabelStudioProject,
)

if TYPE_CHECKING:
    from apps.accounts.models import Project, User
    from apps.clusters.models import Checkpoint, Cluster
    from apps.training.models import Experiment


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
    primary = ls_project_key(backend.ls_project, stored=True)
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
    with KeepAlive() as keep_alive:
        return spec.image_batch([fetch_task_value(v, policy, keep_alive) for v in values])


# --- the gateway: annotations, training ----------------------------------------------------------


def _stored_interface(scope: Scope) -> Interface | None:
    return Interface.from_dict(scope.interface) if scope.interface else None


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
