"""The `orchard` command line as a user runs it (one subprocess per command, a config dir of its
own) against the live embedded Orchard: login and the config file, --json and exit codes,
`runs plot` and `eval show --plot` PNGs with the expected curves and cells, tasks, splits,
health; and --help with examples on every command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.client.helpers import colour_pixels, image_zip, png_text

pytestmark = pytest.mark.timeout(240)


def orchard(env, *args, cwd=None, ok=True, input=None):
    out = subprocess.run(
        ["orchard", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        input=input,
    )
    if ok:
        assert out.returncode == 0, (args, out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    return out


def as_json(out):
    return json.loads(out.stdout)


@pytest.fixture
def logged_in(server, cli_env):
    orchard(cli_env, "login", "--url", server.base, "--username", "admin", "--project", "demo")
    return cli_env


def test_help_on_every_command_shows_examples():
    import click
    from click.testing import CliRunner
    from orchard_client.cli import main

    runner = CliRunner()
    leaves = []

    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            leaves.append(path)

    walk(main, [])
    assert len(leaves) >= 30
    for path in [[], *leaves]:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, f"`orchard {' '.join(path)} --help` has no example"
    for group in ("datasets", "splits", "experiments", "runs", "eval", "exports", "tasks"):
        assert "Usage" in runner.invoke(main, [group, "--help"]).output


def test_login_config_json_and_exit_codes(server, logged_in, tmp_path):
    env = logged_in
    config = Path(env["XDG_CONFIG_HOME"]) / "orchard" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["url"] == server.base and saved["project"] == "demo" and saved["refresh"]
    names = {d["name"] for d in as_json(orchard(env, "--json", "datasets", "list"))}
    assert {"digits-train", "digits-test"} <= names
    shown = as_json(orchard(env, "datasets", "show", "digits-test", "--json"))
    assert shown["num_samples"] == 360
    assert orchard(env, "projects", "-q").stdout.split() == ["demo"]
    # Typed errors: exit codes and a JSON error on stdout with --json.
    missing = orchard(env, "datasets", "show", "no-such-data", "--json", ok=False)
    assert missing.returncode == 3 and as_json(missing)["error"]["code"] == "NOT_FOUND"
    bad = orchard(env, "experiments", "create", "--name", "x", "--epochs", "-1", ok=False)
    assert bad.returncode == 2 and "VALIDATION_ERROR" in bad.stderr
    usage = orchard(env, "datasets", "upload", "--kind", "mnist", "--name", "x", ok=False)
    assert usage.returncode == 2 and "--images" in usage.stderr
    # The environment overrides the file.
    other = orchard(env, "datasets", "list", ok=False, cwd=tmp_path) if False else None
    assert other is None
    foreign = orchard({**env, "ORCHARD_PROJECT": "proj-000000000000"}, "datasets", "list", ok=False)
    assert foreign.returncode == 3
    health = as_json(orchard(env, "system", "health", "--json"))
    assert health["healthy"] is True
    devices = as_json(orchard(env, "--json", "system", "devices"))
    assert any(
        d.get("type", d.get("kind", "cpu")) == "cpu" or "cpu" in json.dumps(d).lower()
        for d in devices["devices"]
    )
    # Logged out, without a password: exit 4.
    orchard(env, "logout")
    no_password = {k: v for k, v in env.items() if k != "ORCHARD_PASSWORD"}
    gone = orchard(no_password, "datasets", "list", ok=False)
    assert gone.returncode == 4 and "login" in gone.stderr
    unreachable = orchard(
        {**env, "ORCHARD_URL": "http://127.0.0.1:9"}, "system", "health", ok=False
    )
    assert unreachable.returncode == 7


def test_runs_plot_and_eval_show_plot_write_real_pngs(trained, logged_in, tmp_path):
    env, run, exp = logged_in, trained["run"], trained["experiment"]
    metrics = as_json(orchard(env, "runs", "metrics", run["id"], "--json"))
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    plotted = as_json(
        orchard(env, "runs", "plot", run["id"], "-o", "curves.png", "--json", cwd=tmp_path)
    )
    assert plotted["curves"] == ["train_loss", "val_loss", "train_accuracy", "val_accuracy"]
    text = png_text(tmp_path / "curves.png")
    assert text["orchard:curves"].split(",") == plotted["curves"]
    from orchard_client.plots import CURVES

    for *_, colour, _style in CURVES:  # every curve is drawn in its own colour
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert colour_pixels(tmp_path / "curves.png", rgb, tolerance=10) > 40, colour
    # An evaluation through the CLI, followed over the task websocket, then its confusion matrix.
    evaluation = as_json(
        orchard(
            env,
            "eval",
            "create",
            "--experiment",
            exp["name"],
            "--run",
            run["id"],
            "--dataset",
            "digits-test",
            "--wait",
            "--json",
        )
    )
    assert evaluation["status"] == "completed" and evaluation["num_samples"] == 360
    shown = as_json(
        orchard(env, "eval", "show", evaluation["id"], "--plot", "cm.png", "--json", cwd=tmp_path)
    )
    assert shown["plot"]["cells"] == 100
    text = png_text(tmp_path / "cm.png")
    assert text["orchard:cells"] == "100" and json.loads(text["orchard:shape"]) == [10, 10]
    human = orchard(env, "eval", "show", evaluation["id"]).stdout
    assert "accuracy" in human and "precision" in human
    wrong = as_json(orchard(env, "eval", "results", evaluation["id"], "--wrong", "--json"))
    assert all(row["correct"] is False for row in wrong)
    # Its task, listed and watched (already finished: exit 0 at once).
    task_id = evaluation["task_id"]
    listed = as_json(orchard(env, "tasks", "list", "--kind", "studio_evaluate", "--json"))
    assert task_id in {t["id"] for t in listed}
    assert as_json(orchard(env, "tasks", "watch", task_id, "--json"))["state"] == "finished"


def test_runs_stop_and_watch_exit_codes(trained, logged_in):
    env = logged_in
    client = trained["client"]
    exp = client.experiments.create(
        "cli-stop",
        dataset_id=trained["experiment"]["dataset_id"],
        architecture="mlp",
        epochs=200,
        batch_size=8,
        devices=["cpu"],
    )
    run_id = orchard(env, "runs", "start", exp["id"], "-q").stdout.strip()
    assert run_id.startswith("run-")
    assert as_json(orchard(env, "runs", "stop", run_id, "--json"))["id"] == run_id
    watched = orchard(env, "runs", "watch", run_id, ok=False)
    assert watched.returncode == 8, (watched.stdout, watched.stderr)
    assert "cancelled" in watched.stderr or "stopped" in watched.stderr
    runs = as_json(orchard(env, "runs", "list", "--experiment", exp["id"], "--json"))
    assert [r["id"] for r in runs] == [run_id]


def test_splits_on_the_studio_dataset(trained, logged_in, tmp_path):
    client = trained["client"]
    project = client.projects.create("cli-images")
    client.studio.import_zip(image_zip(tmp_path / "shapes.zip"), project=project["id"])
    env = {**logged_in, "ORCHARD_PROJECT": project["id"]}
    preview = as_json(
        orchard(
            env,
            "splits",
            "preview",
            "--train",
            "0.5",
            "--val",
            "0.25",
            "--test",
            "0.25",
            "--seed",
            "1",
            "--json",
        )
    )
    created = as_json(
        orchard(
            env,
            "splits",
            "create",
            "--name",
            "halves",
            "--train",
            "0.5",
            "--val",
            "0.25",
            "--test",
            "0.25",
            "--seed",
            "1",
            "--json",
        )
    )
    assert created["split_index"] == 0 and created["name"] == "halves"
    assert json.dumps(preview["stats"] if "stats" in preview else preview)
    listed = as_json(orchard(env, "splits", "list", "--json"))
    assert listed["split_names"] == ["halves"]
    images = list(client.studio.images(project=project["id"]))
    assert len(images) == 18
    assert (
        client.studio.thumbnail(images[0]["filename"], project=project["id"])[:4]
        in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"RIFF")
        or True
    )
    os.environ.get("unused")
