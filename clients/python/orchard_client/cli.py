"""The `orchard` command line.

Every command takes `--json` (machine-readable output on stdout) and `-q` (ids only); progress
goes to stderr. Exit codes: 0 success, 1 other error, 2 invalid input (VALIDATION_ERROR, usage),
3 not found, 4 not logged in or not allowed, 5 conflict, 6 rate limited, 7 server unreachable,
8 the job failed or was stopped, 9 timed out, 130 interrupted."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from . import config as cfg
from .client import Client
from .errors import NotFound, OrchardError, Unauthorized

EXIT_USAGE = 2


class State:
    def __init__(self, url=None, project=None, as_json=False, quiet=False):
        self.url, self.project = url, project
        self.as_json, self.quiet = as_json, quiet
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            values = cfg.resolve(url=self.url, project=self.project)

            def save(tokens: dict) -> None:
                if values.get("access") and not values.get("refresh"):
                    return  # ORCHARD_TOKEN: nothing to remember
                cfg.save_file(
                    {"access": tokens["access"], "refresh": tokens["refresh"], "url": values["url"]}
                )

            if not (values.get("access") or values.get("refresh") or values.get("password")):
                raise Unauthorized("Not logged in: run `orchard login` (or set ORCHARD_TOKEN).")
            self._client = Client(
                values["url"],
                username=values.get("username"),
                password=values.get("password"),
                token=values.get("access"),
                refresh_token=values.get("refresh"),
                project=values.get("project"),
                on_tokens=save,
            )
        return self._client

    # -- output ---------------------------------------------------------------------------------
    def emit(self, data: Any, *, human=None, ids=None) -> None:
        """Print `data` as JSON (--json), its ids (-q), or the human form."""
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        elif self.quiet:
            for value in ids if ids is not None else _ids(data):
                click.echo(value)
        elif human is not None:
            human()
        else:
            click.echo(json.dumps(data, indent=2, default=str))

    def table(self, rows: list[dict], columns: list[str]) -> None:
        if self.as_json or self.quiet:
            self.emit(rows)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(show_edge=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[_cell(row.get(c)) for c in columns])
        Console(width=200).print(table)

    def progress(self):
        """A rich Progress on stderr (silent under --json / -q)."""
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True, quiet=self.as_json or self.quiet)
        return Progress, console


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)[:60]
    return str(value)


def _ids(data: Any) -> list[str]:
    if isinstance(data, list):
        return [str(d.get("id")) for d in data if isinstance(d, dict)]
    if isinstance(data, dict):
        return [str(data.get("id") or data.get("run_id") or "")]
    return [str(data)]


def common(fn):
    """`--json` and `-q` on every command (they may also come before the command)."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
    @click.option("-q", "--quiet", is_flag=True, help="Print ids only; no progress.")
    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx, as_json, quiet, *args, **kwargs):
        state: State = ctx.ensure_object(State)
        state.as_json = state.as_json or as_json
        state.quiet = state.quiet or quiet
        return fn(state, *args, **kwargs)

    return wrapper


class OrchardGroup(click.Group):
    """Turns typed errors into a message on stderr (or JSON) and the error's exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OrchardError as exc:
            state = ctx.find_object(State) or State()
            if state.as_json:
                click.echo(json.dumps({"error": exc.to_dict()}))
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=OrchardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="ORCHARD_URL", help="Server URL (default from the config file).")
@click.option("--project", "-p", envvar="ORCHARD_PROJECT", help="Project id to work in.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print ids only; no progress.")
@click.version_option(__version__, message="orchard-client %(version)s")
@click.pass_context
def main(ctx, url, project, as_json, quiet):
    """Orchard from a terminal.

    \b
    Examples:
      orchard login --url http://127.0.0.1:8000 --username admin --project demo
      orchard datasets list
      orchard runs watch run-1a2b3c4d
      orchard --json tasks list --state active
    """
    ctx.obj = State(url=url, project=project, as_json=as_json, quiet=quiet)


# -- login ------------------------------------------------------------------------------------


@main.command()
@click.option("--url", help="Server URL, e.g. http://127.0.0.1:8000.")
@click.option("--username", "-u", envvar="ORCHARD_USERNAME", prompt=True)
@click.option(
    "--password", envvar="ORCHARD_PASSWORD", prompt=True, hide_input=True, help="Asked if absent."
)
@click.option("--project", "-p", help="The project to work in (default: the server's choice).")
@common
def login(state: State, url, username, password, project):
    """Log in and remember the server, project and tokens in the config file.

    \b
    Examples:
      orchard login --url http://127.0.0.1:8000 --username admin --project demo
      ORCHARD_PASSWORD=... orchard login -u admin
    """
    values = cfg.resolve(url=url or state.url, project=project or state.project)
    client = Client(values["url"], project=values.get("project"))
    data = client.login(username, password)
    path = cfg.save_file(
        {
            "url": client.url,
            "username": username,
            "project": client._project,
            "access": data["access"],
            "refresh": data.get("refresh"),
        }
    )
    out = {"url": client.url, "username": username, "project": client._project, "config": str(path)}
    state.emit(
        out,
        ids=[client._project or ""],
        human=lambda: click.echo(
            f"Logged in to {client.url} as {username}, project {client._project} ({path})"
        ),
    )


@main.command()
@common
def logout(state: State):
    """Forget the tokens (the refresh token is revoked on the server).

    \b
    Example:
      orchard logout
    """
    try:
        state.client().logout()
    except OrchardError:
        pass
    cfg.save_file({"access": None, "refresh": None})
    state.emit({"logged_out": True}, ids=[], human=lambda: click.echo("Logged out."))


# -- projects ---------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@click.pass_context
def projects(ctx, as_json, quiet):
    """Projects you belong to (`orchard projects` lists them).

    \b
    Examples:
      orchard projects
      orchard projects use proj-1a2b3c4d5e6f
    """
    state = ctx.ensure_object(State)
    state.as_json, state.quiet = state.as_json or as_json, state.quiet or quiet
    if ctx.invoked_subcommand is None:
        ctx.invoke(projects_list)


@projects.command("list")
@common
def projects_list(state: State):
    """List your projects.  Example: orchard --json projects list"""
    rows = list(state.client().projects.list())
    state.table(rows, ["id", "name", "role", "created_at"])


@projects.command("create")
@click.argument("name")
@common
def projects_create(state: State, name):
    """Create a project.  Example: orchard projects create "Vision team" """
    state.emit(state.client().projects.create(name))


@projects.command("use")
@click.argument("project_id")
@common
def projects_use(state: State, project_id):
    """Work in PROJECT_ID from now on (saved in the config file).

    \b
    Example:
      orchard projects use proj-1a2b3c4d5e6f
    """
    project = state.client().projects.get(project_id)
    cfg.save_file({"project": project["id"]})
    state.emit(project, human=lambda: click.echo(f"Now working in {project['id']}."))


# -- datasets ---------------------------------------------------------------------------------


def _byte_progress(state: State, label: str):
    """A callback factory showing bytes, rate and ETA on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    Progress, console = state.progress()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    return progress


@main.group()
def datasets():
    """Datasets: upload (MNIST idx, CSV, image ZIP, volumes), list, show, delete."""


@datasets.command("upload")
@click.option("--kind", type=click.Choice(["mnist", "csv", "images", "volume"]), required=True)
@click.option("--name", required=True, help="Dataset name.")
@click.option("--images", type=click.Path(exists=True, dir_okay=False), help="mnist: idx images.")
@click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False), help="mnist/volume: labels file."
)
@click.option(
    "--file", "file_", type=click.Path(exists=True, dir_okay=False), help="csv/images/volume."
)
@click.option("--label-column", help="csv: the label column.")
@click.option("--input-columns", help="csv: comma-separated input columns.")
@click.option("--chunk-mib", default=8, show_default=True, help="Upload chunk size (MiB).")
@common
def datasets_upload(
    state: State, kind, name, images, labels, file_, label_column, input_columns, chunk_mib
):
    """Upload files through the resumable chunked upload API and create a dataset.

    \b
    Examples:
      orchard datasets upload --kind mnist --name digits \\
          --images train-images-idx3-ubyte --labels train-labels-idx1-ubyte
      orchard datasets upload --kind csv --name iris --file iris.csv --label-column species
      orchard datasets upload --kind images --name shapes --file shapes.zip
    """
    roles = {
        "mnist": {"images": images, "labels": labels},
        "csv": {"file": file_},
        "images": {"file": file_},
        "volume": {"file": file_, "labels": labels},
    }[kind]
    required = {"mnist": ("images", "labels")}.get(kind, ("file",))
    missing = [r for r in required if not roles.get(r)]
    if missing:
        raise click.UsageError(f"--kind {kind} needs " + ", ".join(f"--{m}" for m in missing))
    files = {role: path for role, path in roles.items() if path}
    options: dict[str, Any] = {}
    if label_column:
        options["label_column"] = label_column
    if input_columns:
        options["input_columns"] = [c.strip() for c in input_columns.split(",") if c.strip()]
    client = state.client()
    ids = {}
    with _byte_progress(state, "upload") as progress:
        for role, path in files.items():
            bar = progress.add_task(f"{role} {Path(path).name}", total=Path(path).stat().st_size)
            session = client.uploads.upload_file(
                path,
                chunk_size=max(1, chunk_mib) * 1024 * 1024,
                progress=lambda done, total, bar=bar: progress.update(bar, completed=done),
            )
            ids[role] = session["id"]
    dataset = client.datasets.from_uploads(name=name, kind=kind, uploads=ids, **options)
    state.emit(
        dataset,
        human=lambda: click.echo(
            f"{dataset['id']}  {dataset['name']}  {dataset['kind']}  "
            f"{dataset.get('num_samples')} samples"
        ),
    )


@datasets.command("list")
@click.option("--kind", help="Only this kind (mnist, csv, images, volume).")
@common
def datasets_list(state: State, kind):
    """List the project's datasets.  Example: orchard datasets list --kind mnist"""
    rows = list(state.client().datasets.list(kind=kind))
    state.table(rows, ["id", "name", "kind", "status", "num_samples", "num_classes", "created_at"])


@datasets.command("show")
@click.argument("dataset")
@common
def datasets_show(state: State, dataset):
    """Show a dataset (by id or name).  Example: orchard datasets show digits-train"""
    state.emit(state.client().datasets.find(dataset))


@datasets.command("delete")
@click.argument("dataset")
@click.option("--yes", is_flag=True, help="Do not ask.")
@common
def datasets_delete(state: State, dataset, yes):
    """Delete a dataset (by id or name) with its files.  Example: orchard datasets delete old --yes"""
    client = state.client()
    found = client.datasets.find(dataset)
    if not yes and not state.as_json and sys.stdin.isatty():
        click.confirm(f"Delete dataset {found['name']} ({found['id']})?", abort=True)
    client.datasets.delete(found["id"])
    state.emit(
        {"id": found["id"], "deleted": True}, human=lambda: click.echo(f"Deleted {found['id']}.")
    )


# -- splits -----------------------------------------------------------------------------------


@main.group()
def splits():
    """Splits of the project's studio image dataset."""


def _ratios(fn):
    for name, default in (("test", 0.15), ("val", 0.15), ("train", 0.7)):
        fn = click.option(f"--{name}", type=float, default=default, show_default=True)(fn)
    return click.option("--seed", type=int, default=42, show_default=True)(fn)


@splits.command("create")
@click.option("--name", required=True)
@_ratios
@common
def splits_create(state: State, name, train, val, test, seed):
    """Create a deterministic, stratified split.

    \b
    Example:
      orchard splits create --name 70-15-15 --train 0.7 --val 0.15 --test 0.15 --seed 1
    """
    data = state.client().splits.create(name, train=train, val=val, test=test, seed=seed)
    state.emit(data, ids=[str(data.get("split_index"))])


@splits.command("preview")
@_ratios
@common
def splits_preview(state: State, train, val, test, seed):
    """Counts per subset and class of a split, without saving it.

    \b
    Example:
      orchard splits preview --train 0.8 --val 0.1 --test 0.1
    """
    state.emit(state.client().splits.preview(train=train, val=val, test=test, seed=seed))


@splits.command("list")
@common
def splits_list(state: State):
    """The dataset's splits with their counts.  Example: orchard --json splits list"""
    state.emit(state.client().splits.list())


# -- experiments ------------------------------------------------------------------------------


@main.group()
def experiments():
    """Training-studio experiments."""


def _find(items, key: str, kind: str) -> dict:
    for item in items:
        if key in (item.get("id"), item.get("name")):
            return item
    raise NotFound(f"No {kind} {key!r} in this project.")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@experiments.command("create")
@click.option("--name", required=True)
@click.option("--dataset", help="Dataset id or name (default: the studio image dataset).")
@click.option("--val-dataset", help="Validation dataset id or name (datasets without splits).")
@click.option("--split-index", type=int, help="Split of an image dataset.")
@click.option("--architecture", help="mlp, cnn_small, lenet, resnet_tiny or template.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--learning-rate", "--lr", type=float)
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]))
@click.option("--device", "devices", multiple=True, help="cpu or gpu:N (repeatable).")
@click.option("--set", "extra", multiple=True, metavar="KEY=JSON", help="Any other field.")
@common
def experiments_create(
    state: State,
    name,
    dataset,
    val_dataset,
    split_index,
    architecture,
    epochs,
    batch_size,
    learning_rate,
    optimizer,
    devices,
    extra,
):
    """Create an experiment.

    \b
    Examples:
      orchard experiments create --name digits-mlp --dataset digits --architecture mlp --epochs 5
      orchard experiments create --name aug --split-index 0 --set 'augmentation={"hflip": true}'
    """
    client = state.client()
    config: dict[str, Any] = {
        "dataset_id": client.datasets.find(dataset)["id"] if dataset else None,
        "val_dataset_id": client.datasets.find(val_dataset)["id"] if val_dataset else None,
        "split_index": split_index,
        "architecture": architecture,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": optimizer,
        "devices": list(devices) or None,
    }
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set takes KEY=VALUE, got {item!r}")
        config[key] = _parse_value(value)
    experiment = client.experiments.create(name, **config)
    state.emit(experiment, human=lambda: click.echo(f"{experiment['id']}  {experiment['name']}"))


@experiments.command("list")
@common
def experiments_list(state: State):
    """List experiments.  Example: orchard experiments list"""
    rows = list(state.client().experiments.list())
    state.table(rows, ["id", "name", "architecture", "epochs", "latest_run_status", "created_at"])


# -- runs -------------------------------------------------------------------------------------


@main.group()
def runs():
    """Runs: start, watch, stop, resume, metrics, plot."""


def _watch_run(state: State, run_id: str) -> dict:
    """Follow a run with an epoch bar; returns the final run (raises JobFailed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    client = state.client()
    run = client.runs.get(run_id)
    total = run.get("max_epochs") or None
    Progress, console = state.progress()
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"run {run_id}", total=total, info=run.get("status", ""))

        latest = {"metrics": "", "status": str(run.get("status", ""))}

        def on_event(event: dict) -> None:
            if event.get("event") == "epoch_end":
                metrics = event.get("metrics") or event
                latest["metrics"] = "  ".join(
                    f"{k}={metrics[k]:.4g}"
                    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
                    if isinstance(metrics.get(k), int | float)
                )
                progress.update(
                    bar, completed=event.get("epoch"), total=event.get("max_epochs") or total
                )
            elif event.get("status"):
                latest["status"] = str(event["status"])
            progress.update(bar, info=f"{latest['status']}  {latest['metrics']}".strip())

        return client.runs.wait(run_id, on_event=on_event)


def _run_summary(run: dict) -> None:
    best = run.get("best_metric")
    click.echo(
        f"{run['id']}  {run.get('status')}  epochs {run.get('epochs_completed')}/"
        f"{run.get('max_epochs')}" + (f"  best {json.dumps(best)}" if best else "")
    )


@runs.command("start")
@click.argument("experiment")
@click.option("--watch", is_flag=True, help="Follow the run to its end.")
@common
def runs_start(state: State, experiment, watch):
    """Start a run of EXPERIMENT (id or name).

    \b
    Examples:
      RUN=$(orchard runs start exp-1a2b3c4d -q)
      orchard runs start digits-mlp --watch
    """
    client = state.client()
    exp = _find(client.experiments.list(), experiment, "experiment")
    run = client.runs.start(exp["id"])
    run_id = run.get("run_id") or run["id"]
    if watch:
        run = _watch_run(state, run_id)
    state.emit(run, ids=[run_id], human=lambda: _run_summary(run))


@runs.command("watch")
@click.argument("run_id")
@common
def runs_watch(state: State, run_id):
    """Follow a run (SSE, resumed after drops): an epoch bar with the latest loss and accuracy.
    Exits 0 when it completes, 8 when it fails or is stopped.

    \b
    Example:
      orchard runs watch run-1a2b3c4d
    """
    run = _watch_run(state, run_id)
    state.emit(run, human=lambda: _run_summary(run))


@runs.command("list")
@click.option("--experiment", help="Experiment id.")
@click.option("--status")
@common
def runs_list(state: State, experiment, status):
    """List runs, newest first.  Example: orchard runs list --experiment exp-1a2b3c4d"""
    rows = list(state.client().runs.list(experiment_id=experiment, status=status))
    state.table(
        rows, ["id", "experiment_id", "status", "epochs_completed", "max_epochs", "best_value"]
    )


@runs.command("stop")
@click.argument("run_id")
@common
def runs_stop(state: State, run_id):
    """Ask a run to stop after its current step.  Example: orchard runs stop run-1a2b3c4d"""
    run = state.client().runs.stop(run_id)
    state.emit(run, human=lambda: _run_summary(run))


@runs.command("resume")
@click.argument("run_id")
@click.option("--watch", is_flag=True, help="Follow the run to its end.")
@common
def runs_resume(state: State, run_id, watch):
    """Resume a stopped or failed run from its last checkpoint.

    \b
    Example:
      orchard runs resume run-1a2b3c4d --watch
    """
    run = state.client().runs.resume(run_id)
    if watch:
        run = _watch_run(state, run_id)
    state.emit(run, human=lambda: _run_summary(run))


@runs.command("metrics")
@click.argument("run_id")
@common
def runs_metrics(state: State, run_id):
    """Per-epoch metrics of a run.  Example: orchard --json runs metrics run-1a2b3c4d"""
    metrics = state.client().runs.metrics(run_id)
    columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    if state.as_json or state.quiet:
        state.emit(metrics, ids=[str(e.get("epoch")) for e in metrics.get("epochs", [])])
    else:
        state.table(metrics.get("epochs", []), columns)


@runs.command("plot")
@click.argument("run_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG file (default RUN.png).")
@common
def runs_plot(state: State, run_id, output):
    """Write a PNG of the loss and accuracy curves (train and val).

    \b
    Example:
      orchard runs plot run-1a2b3c4d -o curves.png
    """
    from .plots import run_curves_png

    metrics = state.client().runs.metrics(run_id)
    path = Path(output or f"{run_id}.png")
    curves = run_curves_png(metrics, path)
    state.emit(
        {"path": str(path), "curves": curves},
        ids=[str(path)],
        human=lambda: click.echo(f"Wrote {path} ({', '.join(curves)})"),
    )


# -- evaluations ------------------------------------------------------------------------------


@main.group("eval")
def eval_():
    """Evaluations of a run's checkpoint."""


def _wait_task_bar(state: State, label: str, wait):
    """Run `wait(on_event)` with a percentage bar fed by task progress events."""
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    Progress, console = state.progress()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    ) as p:
        bar = p.add_task(label, total=100, info="")

        def on_event(event: dict) -> None:
            value = event.get("progress")
            if isinstance(value, int | float):
                p.update(bar, completed=min(100.0, float(value) * 100))
            if event.get("state"):
                p.update(bar, info=str(event["state"]))

        result = wait(on_event)
        p.update(bar, completed=100)
        return result


@eval_.command("create")
@click.option("--experiment", required=True, help="Experiment id or name.")
@click.option("--run", "run_id", required=True)
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best")
@click.option("--dataset", help="Dataset id or name (default: the experiment's).")
@click.option("--split-index", type=int)
@click.option("--subset", type=click.Choice(["train", "val", "test", "all"]))
@click.option("--batch-size", type=int)
@click.option("--wait", is_flag=True, help="Wait for the results.")
@common
def eval_create(
    state: State, experiment, run_id, checkpoint, dataset, split_index, subset, batch_size, wait
):
    """Evaluate a run's checkpoint.

    \b
    Example:
      orchard eval create --experiment digits-mlp --run run-1a2b3c4d --dataset digits-test --wait
    """
    client = state.client()
    exp = _find(client.experiments.list(), experiment, "experiment")
    evaluation = client.evaluations.create(
        experiment_id=exp["id"],
        run_id=run_id,
        checkpoint=checkpoint,
        dataset_id=client.datasets.find(dataset)["id"] if dataset else None,
        split_index=split_index,
        split_subset=subset,
        batch_size=batch_size,
    )
    if wait:
        evaluation = _wait_task_bar(
            state,
            f"eval {evaluation['id']}",
            lambda on_event: client.evaluations.wait(evaluation["id"], on_event=on_event),
        )
    state.emit(evaluation, human=lambda: _eval_summary(evaluation))


def _eval_summary(evaluation: dict) -> None:
    click.echo(
        f"{evaluation['id']}  {evaluation.get('status')}  accuracy {evaluation.get('accuracy')}  "
        f"samples {evaluation.get('num_samples')}"
    )


@eval_.command("show")
@click.argument("eval_id")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the confusion matrix PNG.")
@common
def eval_show(state: State, eval_id, plot):
    """Show an evaluation (accuracy, per-class metrics) and optionally plot its confusion matrix.

    \b
    Example:
      orchard eval show eval-1a2b3c4d --plot confusion.png
    """
    from .plots import confusion_png, per_class_rows

    evaluation = state.client().evaluations.get(eval_id)
    if plot:
        cells = confusion_png(evaluation, plot)
        evaluation = {**evaluation, "plot": {"path": plot, "cells": cells}}

    def human():
        _eval_summary(evaluation)
        for row in per_class_rows(evaluation.get("results") or {}):
            click.echo(
                f"  {row['name']}: precision {_cell(row.get('precision'))}"
                f"  recall {_cell(row.get('recall'))}  f1 {_cell(row.get('f1'))}"
            )
        if plot:
            click.echo(f"Wrote {plot}")

    state.emit(evaluation, human=human)


@eval_.command("results")
@click.argument("eval_id")
@click.option("--wrong", is_flag=True, help="Only misclassified items.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--sort-by", type=click.Choice(["filename", "confidence", "error"]))
@common
def eval_results(state: State, eval_id, wrong, limit, sort_by):
    """Per-item predictions.  Example: orchard eval results eval-1a2b3c4d --wrong --sort-by error"""
    rows = []
    filters = {"filter_correct": "false" if wrong else None, "sort_by": sort_by}
    if sort_by in ("confidence", "error"):
        filters["sort_order"] = "desc"
    for row in state.client().evaluations.results(eval_id, **filters):
        rows.append(row)
        if len(rows) >= limit:
            break
    state.table(
        rows, ["index", "filename", "true_label", "predicted_label", "confidence", "correct"]
    )


# -- exports ----------------------------------------------------------------------------------


@main.group()
def exports():
    """Model exports (ONNX, TorchScript, safetensors), validated against the model before download."""


@exports.command("create")
@click.option("--run", "run_id", help="Export a run's checkpoint.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best")
@click.option("--cluster", "cluster_id", help="Export a cluster.")
@click.option("--checkpoint-id", help="Export a stored checkpoint.")
@click.option("--format", "format_", default="onnx", show_default=True)
@click.option("--option", "options", multiple=True, metavar="KEY=JSON", help="Format option.")
@click.option("--name")
@click.option("--wait", is_flag=True, help="Wait until the export passed its validation.")
@common
def exports_create(
    state: State, run_id, checkpoint, cluster_id, checkpoint_id, format_, options, name, wait
):
    """Create and start an export.

    \b
    Examples:
      EXPORT=$(orchard exports create --run run-1a2b3c4d --format onnx --wait -q)
      orchard exports create --cluster 7d9c... --format torchscript --option input_shape=[1,64]
    """
    if sum(bool(x) for x in (run_id, cluster_id, checkpoint_id)) != 1:
        raise click.UsageError("give exactly one of --run, --cluster, --checkpoint-id")
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--option takes KEY=VALUE, got {item!r}")
        parsed[key] = _parse_value(value)
    client = state.client()
    export = client.exports.create(
        format_,
        run_id=run_id,
        checkpoint=checkpoint if run_id else None,
        cluster_id=cluster_id,
        checkpoint_id=checkpoint_id,
        options=parsed or None,
        name=name,
    )
    if wait:
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        Progress, console = state.progress()
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]export {task.fields[id]}: {task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as p:
            bar = p.add_task("export", id=export["id"], status=export.get("status"))

            def on_event(event):
                if event.get("state"):
                    p.update(
                        bar,
                        status={
                            "active": "running",
                            "queued": "pending",
                            "finished": "checking",
                        }.get(event["state"], event["state"]),
                    )

            export = client.exports.wait(export["id"], on_event=on_event)
            p.update(bar, status=export.get("status"))
    state.emit(
        export,
        human=lambda: click.echo(
            f"{export['id']}  {export.get('format')}  {export.get('status')}"
            + (
                f"  validation max_diff {export['validation'].get('max_diff')}"
                if isinstance(export.get("validation"), dict)
                else ""
            )
        ),
    )


@exports.command("list")
@common
def exports_list(state: State):
    """List exports, newest first.  Example: orchard --json exports list"""
    rows = list(state.client().exports.list())
    state.table(rows, ["id", "name", "format", "status", "size_bytes", "created_at"])


@exports.command("download")
@click.argument("export_id")
@click.option("-o", "--output", type=click.Path(), default=".", help="File or folder.")
@common
def exports_download(state: State, export_id, output):
    """Download an export's file (bytes, rate and ETA on stderr).

    \b
    Example:
      orchard exports download exp-1a2b3c4d -o model.onnx
    """
    client = state.client()
    with _byte_progress(state, "download") as progress:
        bar = progress.add_task(f"download {export_id}", total=None)
        path = client.exports.download(
            export_id,
            output,
            progress=lambda done, total: progress.update(bar, completed=done, total=total or None),
        )
    state.emit(
        {"path": str(path), "size": path.stat().st_size},
        ids=[str(path)],
        human=lambda: click.echo(f"Wrote {path} ({path.stat().st_size} bytes)"),
    )


# -- tasks ------------------------------------------------------------------------------------


@main.group()
def tasks():
    """Tasks of the job engine: list, watch, abort."""


@tasks.command("list")
@click.option(
    "--state", "state_", type=click.Choice(["queued", "active", "finished", "aborted", "failed"])
)
@click.option("--kind")
@click.option("--cluster", help="Cluster id.")
@common
def tasks_list(state: State, state_, kind, cluster):
    """List tasks.  Example: orchard tasks list --state active"""
    rows = list(state.client().tasks.list(state=state_, kind=kind, cluster=cluster))
    state.table(rows, ["id", "name", "kind", "state", "progress", "queue", "created_at"])


@tasks.command("watch")
@click.argument("task_id")
@common
def tasks_watch(state: State, task_id):
    """Follow a task over its websocket with a percentage bar; exit 0 when it finishes, 8 when it
    fails or is aborted.

    \b
    Example:
      orchard tasks watch 0b6f5c1e-...
    """
    client = state.client()
    task = _wait_task_bar(
        state, f"task {task_id}", lambda on_event: client.tasks.wait(task_id, on_event=on_event)
    )
    state.emit(task, human=lambda: click.echo(f"{task['id']}  {task['state']}"))


@tasks.command("abort")
@click.argument("task_id")
@common
def tasks_abort(state: State, task_id):
    """Abort a task (queued at once, running between two steps).  Example: orchard tasks abort ID"""
    client = state.client()
    client.tasks.abort(task_id)
    task = client.tasks.get(task_id)
    state.emit(task, human=lambda: click.echo(f"{task['id']}  {task['state']}"))


# -- system -----------------------------------------------------------------------------------


@main.group()
def system():
    """Server health and devices."""


@system.command("health")
@common
def system_health(state: State):
    """Database, broker and channel layer; exits 1 when one is down.  Example: orchard system health"""
    values = cfg.resolve(url=state.url)
    client = state._client or Client(values["url"])
    health = client.system.health()
    state.emit(
        health,
        ids=["ok" if health.get("healthy") else "unhealthy"],
        human=lambda: click.echo(json.dumps(health, indent=2)),
    )
    if not health.get("healthy"):
        sys.exit(1)


@system.command("devices")
@common
def system_devices(state: State):
    """Training devices (CPU and GPUs).  Example: orchard --json system devices"""
    state.emit(state.client().system.devices())


# -- demo data --------------------------------------------------------------------------------


@main.command("demo-digits")
@click.argument("folder", type=click.Path(file_okay=False))
@common
def demo_digits(state: State, folder):
    """Write scikit-learn's handwritten digits (8x8) as MNIST idx files in FOLDER: 80 % train,
    20 % test (needs scikit-learn, which ships the data).

    \b
    Example:
      orchard demo-digits digits/
    """
    from .demo import write_digits

    paths = write_digits(Path(folder))
    state.emit(
        {k: str(v) for k, v in paths.items()},
        ids=[str(p) for p in paths.values()],
        human=lambda: [click.echo(str(p)) for p in paths.values()],
    )


if __name__ == "__main__":  # pragma: no cover
    main()
