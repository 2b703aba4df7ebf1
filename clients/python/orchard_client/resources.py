"""Every resource of the main API, as small objects on the client (`client.datasets.list()`).

Objects are the server's JSON (dicts); lists are iterators over every page; project-scoped
routes use the client's project unless `project=` is given."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import JobFailed, NotFound, OrchardError, ServerError

if TYPE_CHECKING:
    from .client import Client, ProgressCallback


def _q(value: Any) -> str:
    from .client import q

    return q(value)


class Resource:
    def __init__(self, client: Client):
        self.client = client

    def _p(self, project: str | None) -> str:
        return _q(project or self.client.project)


# -- accounts ---------------------------------------------------------------------------------


class Projects(Resource):
    def list(self, **params) -> Iterator[dict]:
        return self.client.paginate("/api/projects", **params)

    def get(self, project_id: str | None = None) -> dict:
        return self.client.get(f"/api/projects/{self._p(project_id)}")

    def create(self, name: str, **fields) -> dict:
        return self.client.request("POST", "/api/projects", json={"name": name, **fields})

    def update(self, project_id: str, **fields) -> dict:
        return self.client.request("PATCH", f"/api/projects/{_q(project_id)}", json=fields)

    def delete(self, project_id: str) -> None:
        self.client.request("DELETE", f"/api/projects/{_q(project_id)}")


class Members(Resource):
    def _base(self, project):
        return f"/api/projects/{self._p(project)}/members"

    def list(self, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project))

    def get(self, username: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(username)}")

    def add(self, username: str, role: str = "member", *, project=None, **fields) -> dict:
        body = {"username": username, "role": role, **fields}
        return self.client.request("POST", self._base(project), json=body)

    def update(self, username: str, *, project: str | None = None, **fields) -> dict:
        return self.client.request("PATCH", f"{self._base(project)}/{_q(username)}", json=fields)

    def remove(self, username: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(username)}")


class Users(Resource):
    def list(self) -> Iterator[dict]:
        return self.client.paginate("/api/users")

    def get(self, username: str) -> dict:
        return self.client.get(f"/api/users/{_q(username)}")

    def create(self, username: str, password: str, **fields) -> dict:
        body = {"username": username, "password": password, **fields}
        return self.client.request("POST", "/api/users", json=body)

    def update(self, username: str, **fields) -> dict:
        return self.client.request("PATCH", f"/api/users/{_q(username)}", json=fields)

    def delete(self, username: str) -> None:
        self.client.request("DELETE", f"/api/users/{_q(username)}")


# -- datasets ---------------------------------------------------------------------------------


class Uploads(Resource):
    """The resumable chunked upload API (see `orchard_client.uploads`)."""

    def _base(self, project):
        return f"/api/projects/{self._p(project)}/uploads"

    def create(self, filename: str, size: int, *, project: str | None = None) -> dict:
        body = {"filename": filename, "size": size}
        return self.client.request("POST", self._base(project), json=body)

    def get(self, upload_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(upload_id)}")

    def delete(self, upload_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(upload_id)}")

    def upload_file(
        self,
        path: str | os.PathLike,
        *,
        progress: ProgressCallback | None = None,
        chunk_size: int = 8 * 1024 * 1024,
        upload_id: str | None = None,
        max_retries: int = 8,
        project: str | None = None,
    ) -> dict:
        """Upload a file from disk, streamed chunk by chunk, resuming after broken connections;
        returns the completed upload session."""
        from .uploads import upload_file

        return upload_file(
            self.client,
            Path(path),
            project=project or self.client.project,
            progress=progress,
            chunk_size=chunk_size,
            upload_id=upload_id,
            max_retries=max_retries,
        )


class Datasets(Resource):
    """Datasets of every kind; files go through the chunked upload API."""

    def _base(self, project):
        return f"/api/projects/{self._p(project)}/datasets"

    def list(self, *, kind: str | None = None, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project), kind=kind)

    def get(self, dataset_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(dataset_id)}")

    def find(self, name_or_id: str, *, project: str | None = None) -> dict:
        """A dataset by id, else by name (the newest of that name)."""
        for dataset in self.list(project=project):
            if name_or_id in (dataset.get("id"), dataset.get("name")):
                return dataset
        raise NotFound(f"No dataset {name_or_id!r} in this project.")

    def delete(self, dataset_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(dataset_id)}")

    def from_uploads(
        self, *, name: str, kind: str, uploads: dict[str, str], project=None, **options
    ) -> dict:
        body = {"name": name, "kind": kind, "uploads": uploads, **options}
        return self.client.request("POST", f"{self._base(project)}/from-uploads", json=body)

    def upload(
        self,
        kind: str,
        name: str,
        files: dict[str, str | os.PathLike],
        *,
        progress: Callable[[str, int, int], None] | None = None,
        project: str | None = None,
        **options,
    ) -> dict:
        """Upload the files of one dataset (roles as the server names them: mnist `images` and
        `labels`; csv and images `file`; volume `file` and optional `labels`) and create it.
        `progress(role, done, total)` follows each file."""
        ids = {}
        for role, path in files.items():
            cb = (
                (lambda done, total, _role=role: progress(_role, done, total)) if progress else None
            )
            session = self.client.uploads.upload_file(path, progress=cb, project=project)
            ids[role] = session["id"]
        return self.from_uploads(name=name, kind=kind, uploads=ids, project=project, **options)

    def upload_mnist(self, images, labels, *, name: str, **kw) -> dict:
        return self.upload("mnist", name, {"images": images, "labels": labels}, **kw)

    def upload_csv(self, file, *, name: str, label_column=None, input_columns=None, **kw) -> dict:
        options = {}
        if label_column:
            options["label_column"] = label_column
        if input_columns:
            options["input_columns"] = list(input_columns)
        return self.upload("csv", name, {"file": file}, **options, **kw)

    def upload_images(self, zip_file, *, name: str, **kw) -> dict:
        """A ZIP of class folders (class/name.png)."""
        return self.upload("images", name, {"file": zip_file}, **kw)

    def upload_volume(self, file, *, name: str, labels=None, **kw) -> dict:
        files = {"file": file, **({"labels": labels} if labels else {})}
        return self.upload("volume", name, files, **kw)


class StudioDataset(Resource):
    """The project's studio image dataset and its images."""

    def get(self, *, project: str | None = None) -> dict:
        return self.client.get(f"/api/datasets/{self._p(project)}")

    def delete(self, *, project: str | None = None) -> dict:
        return self.client.request("DELETE", f"/api/datasets/{self._p(project)}")

    def import_zip(self, path, *, project: str | None = None) -> dict:
        """Import a ZIP of class folders (streamed from disk as multipart)."""
        path = Path(path)
        with open(path, "rb") as fh:
            return self.client.request(
                "POST",
                f"/api/datasets/{self._p(project)}/import/upload",
                files={"file": (path.name, fh, "application/zip")},
                retry_auth=False,
            )

    def import_local(self, server_path: str, *, project: str | None = None) -> dict:
        return self.client.request(
            "POST", f"/api/datasets/{self._p(project)}/import/local", json={"path": server_path}
        )

    def images(self, *, project: str | None = None, **filters) -> Iterator[dict]:
        """Images (filters: sort_by, sort_order, filter_class, search)."""
        return self.client.paginate(f"/api/datasets/{self._p(project)}/images", **filters)

    def image(self, filename: str, *, project: str | None = None) -> bytes:
        path = f"/api/datasets/{self._p(project)}/images/{_path(filename)}"
        return self.client.send("GET", path, headers={"Accept": "*/*"}).content

    def image_info(self, filename: str, *, project: str | None = None) -> dict:
        return self.client.get(f"/api/datasets/{self._p(project)}/images/{_path(filename)}/info")

    def thumbnail(self, filename: str, *, project: str | None = None) -> bytes:
        path = f"/api/datasets/{self._p(project)}/thumbnails/{_path(filename)}"
        return self.client.send("GET", path, headers={"Accept": "*/*"}).content


def _path(filename: str) -> str:
    return "/".join(_q(part) for part in str(filename).split("/"))


class Splits(Resource):
    def list(self, *, project: str | None = None) -> dict:
        return self.client.get(f"/api/splits/{self._p(project)}")

    def create(
        self,
        name: str,
        *,
        train: float,
        val: float,
        test: float,
        seed: int = 42,
        project: str | None = None,
    ) -> dict:
        body = {"name": name, "ratios": {"train": train, "val": val, "test": test}, "seed": seed}
        return self.client.request("POST", f"/api/splits/{self._p(project)}", json=body)

    def preview(self, *, train, val, test, seed: int = 42, project: str | None = None) -> dict:
        return self.client.get(
            f"/api/splits/{self._p(project)}/preview", train=train, val=val, test=test, seed=seed
        )

    def get(self, index: int, *, project: str | None = None) -> dict:
        return self.client.get(f"/api/splits/{self._p(project)}/{int(index)}")

    def delete(self, index: int, *, project: str | None = None) -> dict:
        return self.client.request("DELETE", f"/api/splits/{self._p(project)}/{int(index)}")


# -- models -----------------------------------------------------------------------------------


class Clusters(Resource):
    def _base(self, project):
        return f"/api/projects/{self._p(project)}/clusters"

    def list(self, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project))

    def get(self, cluster_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(cluster_id)}")

    def create(self, name: str, template: str, *, seed: int | None = None, project=None) -> dict:
        body = {"name": name, "template": template, **({"seed": seed} if seed is not None else {})}
        return self.client.request("POST", self._base(project), json=body)

    def delete(self, cluster_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(cluster_id)}")

    def set_mode(self, cluster_id: str, mode: str, *, project: str | None = None) -> dict:
        path = f"{self._base(project)}/{_q(cluster_id)}/mode"
        return self.client.request("PUT", path, json={"mode": mode.upper()})

    def set_host(self, cluster_id: str, host_id: str, *, project: str | None = None) -> dict:
        path = f"{self._base(project)}/{_q(cluster_id)}/host"
        return self.client.request("PUT", path, json={"host_id": host_id})

    def save_checkpoint(self, cluster_id: str, name: str, *, project=None) -> dict:
        path = f"{self._base(project)}/{_q(cluster_id)}/checkpoints"
        return self.client.request("POST", path, json={"name": name})


class Checkpoints(Resource):
    def _base(self, project):
        return f"/api/projects/{self._p(project)}/checkpoints"

    def list(self, *, project: str | None = None, **filters) -> Iterator[dict]:
        return self.client.paginate(self._base(project), **filters)

    def get(self, checkpoint_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(checkpoint_id)}")

    def delete(self, checkpoint_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(checkpoint_id)}")

    def restore(self, checkpoint_id: str, cluster_id: str, *, project=None) -> dict:
        path = f"{self._base(project)}/{_q(checkpoint_id)}/restore"
        return self.client.request("POST", path, json={"cluster_id": cluster_id})


class Hosts(Resource):
    def list(self) -> list[dict]:
        data = self.client.get("/api/hosts")
        return data if isinstance(data, list) else list(data.get("items", []))


# -- tasks ------------------------------------------------------------------------------------

TASK_TERMINAL = ("finished", "failed", "aborted")


class Tasks(Resource):
    def _base(self, project):
        return f"/api/projects/{self._p(project)}/tasks"

    def list(self, *, cluster=None, state=None, kind=None, project=None) -> Iterator[dict]:
        return self.client.paginate(self._base(project), cluster=cluster, state=state, kind=kind)

    def get(self, task_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(task_id)}")

    def create(
        self,
        name: str,
        kind: str,
        cluster_id: str,
        dataset_id: str,
        params: dict | None = None,
        *,
        project: str | None = None,
    ) -> dict:
        body = {
            "name": name,
            "kind": kind,
            "cluster_id": cluster_id,
            "dataset_id": dataset_id,
            "params": params or {},
        }
        return self.client.request("POST", self._base(project), json=body)

    def abort(self, task_id: str, *, project: str | None = None) -> Any:
        return self.client.request("DELETE", f"{self._base(project)}/{_q(task_id)}")

    def retry(self, task_id: str, *, project: str | None = None) -> dict:
        return self.client.request("POST", f"{self._base(project)}/{_q(task_id)}/retry")

    def watch(self, task_id: str, *, project: str | None = None, **kw) -> Iterator[dict]:
        """The task's events over its websocket (state, replayed events, live progress) until
        it ends; a dropped socket is reopened with `?after=<last seq>`."""
        from .events import watch_task

        return watch_task(self.client, self._p(project), task_id, **kw)

    def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[dict], None] | None = None,
        project: str | None = None,
    ) -> dict:
        """Follow the task to its end; returns it finished, raises JobFailed otherwise."""
        for event in self.watch(task_id, project=project, timeout=timeout):
            if on_event:
                on_event(event)
        task = self.get(task_id, project=project)
        if task["state"] != "finished":
            reason = task.get("error") or f"the task ended {task['state']}"
            raise JobFailed(reason, state=task["state"], job=task)
        return task


class Results(Resource):
    def _base(self, project):
        return f"/api/projects/{self._p(project)}/results"

    def list(self, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project))

    def get(self, result_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(result_id)}")

    def delete(self, result_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(result_id)}")

    def check(self, result_id: str, dataset_id: str, *, project: str | None = None) -> dict:
        path = f"{self._base(project)}/{_q(result_id)}/check"
        return self.client.request("POST", path, json={"dataset_id": dataset_id})


# -- training studio --------------------------------------------------------------------------

RUN_TERMINAL = ("completed", "failed", "cancelled", "stopped")


class Experiments(Resource):
    def _base(self, project):
        return f"/api/training/{self._p(project)}/experiments"

    def list(self, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project))

    def get(self, exp_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(exp_id)}")

    def create(self, name: str, *, project: str | None = None, **config) -> dict:
        body = {"name": name, **{k: v for k, v in config.items() if v is not None}}
        return self.client.request("POST", self._base(project), json=body)

    def update(self, exp_id: str, *, project: str | None = None, **fields) -> dict:
        return self.client.request("PATCH", f"{self._base(project)}/{_q(exp_id)}", json=fields)

    def delete(self, exp_id: str, *, project: str | None = None) -> Any:
        return self.client.request("DELETE", f"{self._base(project)}/{_q(exp_id)}")

    def runs(self, exp_id: str, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(f"{self._base(project)}/{_q(exp_id)}/runs")


class Runs(Resource):
    def _base(self, project):
        return f"/api/training/{self._p(project)}"

    def list(self, *, experiment_id=None, status=None, project=None) -> Iterator[dict]:
        return self.client.paginate(
            f"{self._base(project)}/runs", experiment_id=experiment_id, status=status
        )

    def get(self, run_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/runs/{_q(run_id)}")

    def start(self, exp_id: str, *, project: str | None = None) -> dict:
        """Start a run of the experiment; returns the run (its id also as `run_id`)."""
        run = self.client.request("POST", f"{self._base(project)}/experiments/{_q(exp_id)}/run")
        if isinstance(run, dict) and "id" not in run and "run_id" in run:
            run["id"] = run["run_id"]
        return run

    def stop(self, run_id: str, *, project: str | None = None) -> dict:
        return self.client.request("POST", f"{self._base(project)}/runs/{_q(run_id)}/stop")

    def resume(self, run_id: str, *, project: str | None = None) -> dict:
        return self.client.request("POST", f"{self._base(project)}/runs/{_q(run_id)}/resume")

    def delete(self, run_id: str, *, project: str | None = None) -> Any:
        return self.client.request("DELETE", f"{self._base(project)}/runs/{_q(run_id)}")

    def metrics(self, run_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/runs/{_q(run_id)}/metrics")

    def watch(
        self, run_id: str, *, last_event_id: int | None = None, project=None, **kw
    ) -> Iterator[dict]:
        """The run's Server-Sent Events (`{"event", "id", **data}`) until it ends; a dropped
        stream is reopened with `Last-Event-ID`, so no stored event is missed or repeated."""
        from .events import watch_run

        path = f"{self._base(project)}/runs/{_q(run_id)}/stream"
        return watch_run(self.client, path, last_event_id=last_event_id, **kw)

    def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[dict], None] | None = None,
        project: str | None = None,
    ) -> dict:
        """Follow the run to its end; returns it completed, raises JobFailed (with the server's
        reason) when it failed or was stopped."""
        for event in self.watch(run_id, project=project, timeout=timeout):
            if on_event:
                on_event(event)
        run = self.get(run_id, project=project)
        if run.get("status") != "completed":
            reason = run.get("error") or f"the run ended {run.get('status')}"
            raise JobFailed(reason, state=str(run.get("status")), job=run)
        return run


class Evaluations(Resource):
    def _base(self, project):
        return f"/api/evaluation/{self._p(project)}"

    def list(self, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project))

    def get(self, eval_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(eval_id)}")

    def create(
        self,
        *,
        experiment_id: str,
        run_id: str,
        checkpoint: str = "best",
        project: str | None = None,
        **fields,
    ) -> dict:
        body = {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "checkpoint": checkpoint,
            **{k: v for k, v in fields.items() if v is not None},
        }
        return self.client.request("POST", self._base(project), json=body)

    def delete(self, eval_id: str, *, project: str | None = None) -> Any:
        return self.client.request("DELETE", f"{self._base(project)}/{_q(eval_id)}")

    def results(self, eval_id: str, *, project: str | None = None, **filters) -> Iterator[dict]:
        """Per-item predictions (filters: sort_by, sort_order, filter_correct, filter_class)."""
        return self.client.paginate(f"{self._base(project)}/{_q(eval_id)}/results", **filters)

    def wait(self, eval_id: str, *, timeout: float | None = None, on_event=None, project=None):
        """Follow the evaluation's task to its end; returns the evaluation with its results."""
        evaluation = self.get(eval_id, project=project)
        if evaluation.get("task_id"):
            try:
                self.client.tasks.wait(
                    evaluation["task_id"], timeout=timeout, on_event=on_event, project=project
                )
            except JobFailed:
                pass  # the evaluation's own status and error say it
        evaluation = self.get(eval_id, project=project)
        if evaluation.get("status") != "completed":
            reason = evaluation.get("error") or f"the evaluation ended {evaluation.get('status')}"
            raise JobFailed(reason, state=str(evaluation.get("status")), job=evaluation)
        return evaluation


class Exports(Resource):
    def _base(self, project):
        return f"/api/export/{self._p(project)}"

    def formats(self) -> list[dict]:
        data = self.client.get("/api/export/formats")
        return data.get("formats", data) if isinstance(data, dict) else data

    def list(self, *, export_format: str | None = None, project=None) -> Iterator[dict]:
        return self.client.paginate(self._base(project), export_format=export_format)

    def get(self, export_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(export_id)}")

    def create(
        self,
        format: str = "onnx",
        *,
        run_id: str | None = None,
        experiment_id: str | None = None,
        checkpoint: str | None = None,
        cluster_id: str | None = None,
        checkpoint_id: str | None = None,
        options: dict | None = None,
        name: str | None = None,
        project: str | None = None,
    ) -> dict:
        """Create and start an export from a run (`run_id`, its experiment looked up when not
        given; `checkpoint` best/last), a cluster or a checkpoint."""
        body: dict[str, Any] = {"format": format}
        if run_id:
            if not experiment_id:
                experiment_id = self.client.runs.get(run_id, project=project)["experiment_id"]
            body.update(run_id=run_id, experiment_id=experiment_id, checkpoint=checkpoint or "best")
        if cluster_id:
            body["cluster_id"] = cluster_id
        if checkpoint_id:
            body["checkpoint_id"] = checkpoint_id
        if options:
            body["options"] = options
        if name:
            body["name"] = name
        return self.client.request("POST", self._base(project), json=body)

    def delete(self, export_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(export_id)}")

    def download(self, export_id: str, dest, *, progress=None, project=None) -> Path:
        path = f"{self._base(project)}/{_q(export_id)}/download"
        return self.client.download(path, dest, progress=progress)

    def wait(self, export_id: str, *, timeout: float | None = None, on_event=None, project=None):
        """Follow the export's task to its end; returns it completed, raises JobFailed."""
        export = self.get(export_id, project=project)
        if export.get("task_id") and export.get("status") not in EXPORT_TERMINAL:
            try:
                self.client.tasks.wait(
                    export["task_id"], timeout=timeout, on_event=on_event, project=project
                )
            except JobFailed:
                pass
        export = self.get(export_id, project=project)
        if export.get("status") != "completed":
            reason = export.get("error") or f"the export ended {export.get('status')}"
            raise JobFailed(reason, state=str(export.get("status")), job=export)
        return export


EXPORT_TERMINAL = ("completed", "failed", "aborted")


# -- serving and marketplace ------------------------------------------------------------------


class LabelStudio(Resource):
    """Label Studio ML backends."""

    def _base(self, project):
        return f"/api/mlbackend/{self._p(project)}/backends"

    def list(self, *, project: str | None = None) -> Iterator[dict]:
        return self.client.paginate(self._base(project))

    def get(self, backend_id: str, *, project: str | None = None) -> dict:
        return self.client.get(f"{self._base(project)}/{_q(backend_id)}")

    def create(self, name: str, *, project: str | None = None, **fields) -> dict:
        return self.client.request("POST", self._base(project), json={"name": name, **fields})

    def update(self, backend_id: str, *, project: str | None = None, **fields) -> dict:
        path = f"{self._base(project)}/{_q(backend_id)}"
        return self.client.request("PATCH", path, json=fields)

    def delete(self, backend_id: str, *, project: str | None = None) -> None:
        self.client.request("DELETE", f"{self._base(project)}/{_q(backend_id)}")

    def annotations(self, backend_id: str, *, project=None) -> Iterator[dict]:
        return self.client.paginate(f"{self._base(project)}/{_q(backend_id)}/annotations")

    def versions(self, backend_id: str, *, project: str | None = None) -> Any:
        return self.client.get(f"{self._base(project)}/{_q(backend_id)}/versions")

    def train(self, backend_id: str, *, project: str | None = None) -> dict:
        return self.client.request("POST", f"{self._base(project)}/{_q(backend_id)}/train")


class Marketplace(Resource):
    """Read-only marketplace documents (problems, algos, data, uplets, pushes)."""

    def _list(self, what: str, project, **filters) -> Iterator[dict]:
        return self.client.paginate(f"/api/marketplace/{self._p(project)}/{what}", **filters)

    def _get(self, what: str, uuid: str, project) -> dict:
        return self.client.get(f"/api/marketplace/{self._p(project)}/{what}/{_q(uuid)}")

    def problems(self, *, project=None):
        return self._list("problems", project)

    def problem(self, uuid: str, *, project=None):
        return self._get("problems", uuid, project)

    def algos(self, *, problem=None, project=None):
        return self._list("algos", project, problem=problem)

    def algo(self, uuid: str, *, project=None):
        return self._get("algos", uuid, project)

    def data(self, *, project=None):
        return self._list("data", project)

    def learnuplets(self, *, problem=None, algo=None, status=None, project=None):
        return self._list("learnuplets", project, problem=problem, algo=algo, status=status)

    def learnuplet(self, uuid: str, *, project=None):
        return self._get("learnuplets", uuid, project)

    def preduplets(self, *, problem=None, status=None, project=None):
        return self._list("preduplets", project, problem=problem, status=status)

    def preduplet(self, uuid: str, *, project=None):
        return self._get("preduplets", uuid, project)

    def pushes(self, *, state=None, project=None):
        return self._list("pushes", project, state=state)

    def compute(self, *, project=None) -> dict:
        return self.client.get(f"/api/marketplace/{self._p(project)}/compute")


class System(Resource):
    def health(self) -> dict:
        """Health of the database, broker and channel layer (a 503 answer is returned, with
        `healthy: False`, not raised)."""
        try:
            data = self.client.request("GET", "/api/system/health", auth=False)
            return {"healthy": True, **(data if isinstance(data, dict) else {"data": data})}
        except ServerError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            return {"healthy": False, "message": exc.message, **details}

    def devices(self) -> dict:
        return self.client.get("/api/system/devices")

    def workspace(self) -> dict:
        return self.client.get("/api/system/workspace")


__all__ = [name for name, obj in globals().items() if isinstance(obj, type)] + ["OrchardError"]
