"""Helpers of the Label Studio tests: label configs, backends, images, a local task-data server,
and the requests Label Studio 1.23 sends (headers and bodies as its `ml/api_connector.py` and
webhooks build them)."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from tests.clusters.helpers import make_cluster, template

IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image">
    <Choice value="Horizontal"/>
    <Choice value="Vertical"/>
  </Choices>
</View>"""

TEXT_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single-radio" showInLine="true">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
  </Choices>
</View>"""

LS_VERSION = "1.23.2"
LS_PROJECT_UID = "7.1732300000"
LS_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"


def make_backend(project, user, *, config: str = IMAGE_CONFIG, basic_auth=None, **fields):
    """A backend on a fresh template model: 64 inputs (8x8 images) or 128 (texts), 2 outputs."""
    from apps.mlbackend.labelstudio.services import backend_create

    inputs = 128 if "$text" in config else 64
    cluster = make_cluster(project, user, text=template(inputs=inputs, hidden=32, outputs=2))
    user_name, password = basic_auth or ("", "")
    return backend_create(
        project=project,
        actor=user,
        name="ls",
        cluster=cluster,
        label_config=config,
        basic_auth_user=user_name,
        basic_auth_password=password,
        **fields,
    )


def stripes_png(vertical: bool, *, size: int = 8, phase: int = 0) -> bytes:
    """An image of black and white stripes, vertical or horizontal (a learnable two-class task)."""
    line = ((np.arange(size) + phase) % 2) * 255
    pixels = np.tile(line, (size, 1)) if vertical else np.tile(line[:, None], (1, size))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").resize((size * 4, size * 4)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class TaskDataServer:
    """A Label Studio stand-in on 127.0.0.1 serving files at given paths.

    `files` maps a path (with query) to bytes; `redirects` maps a path to a Location;
    `require_token` makes every file need `Authorization: Token <token>`. Every request's path
    and headers are recorded in `requests`.
    """

    def __init__(
        self,
        files=None,
        *,
        redirects=None,
        require_token: str | None = None,
        delay=0.0,
        hold=None,
        gather: int | None = None,
        keep_alive: bool = False,
    ):
        """`hold(path)`: requests it is true for wait until `release` is set (at most 60 s);
        `gather`: every request waits (at most 30 s) until that many are in flight together;
        `keep_alive`: HTTP/1.1 connections kept open between requests (as Label Studio's nginx
        and Django's runserver keep them), counted in `connections`."""
        self.files = dict(files or {})
        self.hold = hold
        self.release = threading.Event()
        self.gather = gather
        self.gathered = threading.Event()
        self.redirects = dict(redirects or {})
        self.require_token = require_token
        self.delay = delay
        self.requests: list[tuple[str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._count = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self):
                super().setup()
                with server._count:
                    server.connections += 1

            def log_message(self, *args):
                pass

            def do_GET(self):
                with server._count:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    if server.gather and server.in_flight >= server.gather:
                        server.gathered.set()
                self._counted = True
                try:
                    self._get()
                finally:
                    self._leave()

            def _leave(self):
                # Out of flight before the answer is written: a client that has its answer may
                # send its next request before this thread would reach a `finally`.
                if self._counted:
                    self._counted = False
                    with server._count:
                        server.in_flight -= 1

            def _get(self):
                import time

                server.requests.append((self.path, dict(self.headers)))
                if server.delay:
                    time.sleep(server.delay)  # a slow Label Studio, on the server's side
                if server.hold is not None and server.hold(self.path):
                    server.release.wait(60)  # a Label Studio that has not answered yet
                if server.gather:
                    server.gathered.wait(30)
                self._leave()
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                wanted = f"Token {server.require_token}" if server.require_token else None
                if wanted and self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 64  # concurrent fetches: the default 5 drops connects

            def handle_error(self, request, client_address):
                pass  # a client that gave up (size or time limit) is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class LabelStudioClient:
    """Sends what Label Studio sends to one backend URL (the plain one, or its secret URL)."""

    def __init__(self, backend_id: str, basic_auth=None, *, secret: str | None = None):
        from django.test import Client

        self.base = f"/ml/{backend_id}" + (f"/s/{secret}" if secret else "")
        self.client = Client()
        self.headers = ls_headers(basic_auth)

    def get(self, route, **query):
        return self.client.get(f"{self.base}/{route}", query, **self.headers)

    def post(self, route, body):
        import json

        return self.client.post(
            f"{self.base}/{route}",
            json.dumps(body),
            content_type="application/json",
            **self.headers,
        )


def no_connection_check(monkeypatch) -> None:
    """Skip /setup's check against Label Studio (tested in test_labelstudio_connect.py) in tests
    about something else, whose Label Studio hostname answers nothing."""
    from apps.mlbackend.labelstudio import services

    monkeypatch.setattr(services, "check_label_studio", lambda **kwargs: None)


def export_path(ls_project: int) -> str:
    """The path of Label Studio's JSON export of a project's annotated tasks."""
    return f"/api/projects/{ls_project}/export?exportType=JSON&download_all_tasks=false"


def json_bytes(value) -> bytes:
    import json

    return json.dumps(value).encode()


# --- what Label Studio 1.23 sends ----------------------------------------------------------------


def ls_headers(basic_auth: tuple[str, str] | None = None) -> dict[str, str]:
    """The headers of Label Studio's `requests` session to an ML backend, as Django test-client
    META keys (Host, Content-Length and Content-Type are set by the client)."""
    headers = {
        "HTTP_USER_AGENT": f"heartex/{LS_VERSION}",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate",
        "HTTP_ACCEPT": "*/*",
        "HTTP_CONNECTION": "keep-alive",
    }
    if basic_auth:
        raw = f"{basic_auth[0]}:{basic_auth[1]}".encode()
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(raw).decode()
    return headers


def ls_project(label_config: str) -> dict:
    """The project object of Label Studio's webhook payloads (ProjectWebhookSerializer fields)."""
    return {
        "id": 7,
        "title": "Stripes",
        "description": "",
        "label_config": label_config,
        "expert_instruction": "",
        "show_instruction": False,
        "show_skip_button": True,
        "enable_empty_annotation": True,
        "show_annotation_history": False,
        "organization": 1,
        "color": "#FFFFFF",
        "maximum_annotations": 1,
        "is_published": False,
        "model_version": "",
        "is_draft": False,
        "created_by": {"id": 1, "first_name": "", "last_name": "", "email": "ls@example.com"},
        "created_at": "2024-11-22T18:33:20.000000Z",
        "min_annotations_to_start_training": 0,
        "start_training_on_annotation_update": False,
        "show_collab_predictions": True,
        "num_tasks_with_annotations": 1,
        "task_number": 10,
        "useful_annotation_number": 1,
        "ground_truth_number": 0,
        "skipped_annotations_number": 0,
        "total_annotations_number": 1,
        "total_predictions_number": 0,
        "sampling": "Sequential sampling",
        "show_ground_truth_first": False,
        "show_overlap_first": False,
        "overlap_cohort_percentage": 100,
        "task_data_login": None,
        "task_data_password": None,
        "control_weights": {},
        "evaluate_predictions_automatically": False,
        "skip_queue": "REQUEUE_FOR_OTHERS",
        "reveal_preannotations_interactively": False,
        "pinned_at": None,
        "finished_task_number": 1,
        "queue_total": 10,
        "queue_done": 1,
    }


def ls_task(task_id: int, data: dict, *, annotations=None) -> dict:
    """A full task object as Label Studio sends it to /predict (and inside /train)."""
    return {
        "id": task_id,
        "data": data,
        "meta": {},
        "created_at": "2024-11-22T18:35:00.000000Z",
        "updated_at": "2024-11-22T18:35:00.000000Z",
        "is_labeled": bool(annotations),
        "overlap": 1,
        "inner_id": task_id,
        "total_annotations": len(annotations or []),
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 7,
        "updated_by": None,
        "file_upload": 3,
        "comment_authors": [],
        "annotations": annotations or [],
        "predictions": [],
    }


def ls_annotation(annotation_id: int, task_id: int, from_name: str, to_name: str, label: str):
    """An annotation object as Label Studio's webhooks serialize it."""
    return {
        "id": annotation_id,
        "result": [
            {
                "value": {"choices": [label]},
                "id": f"r{annotation_id}",
                "from_name": from_name,
                "to_name": to_name,
                "type": "choices",
                "origin": "manual",
            }
        ],
        "created_username": " ls@example.com, 1",
        "created_ago": "0 minutes",
        "completed_by": 1,
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": "2024-11-22T18:40:00.000000Z",
        "updated_at": "2024-11-22T18:40:00.000000Z",
        "draft_created_at": None,
        "lead_time": 3.2,
        "import_id": None,
        "last_action": None,
        "bulk_created": False,
        "task": task_id,
        "project": 7,
        "updated_by": 1,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def setup_body(
    label_config: str, hostname: str = "http://localhost:8080", project: str = LS_PROJECT_UID
) -> dict:
    return {
        "project": project,
        "schema": label_config,
        "hostname": hostname,
        "access_token": LS_TOKEN,
        "extra_params": None,
    }


def predict_body(
    tasks: list[dict], label_config: str, context=None, project: str = LS_PROJECT_UID
) -> dict:
    return {
        "tasks": tasks,
        "project": project,
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": context},
    }


def webhook_body(
    action: str, label_config: str, annotation=None, task=None, project_id: int = 7
) -> dict:
    body = {"action": action, "project": {**ls_project(label_config), "id": project_id}}
    if annotation is not None:
        body["annotation"] = annotation
    if task is not None:
        body["task"] = task
    return body
