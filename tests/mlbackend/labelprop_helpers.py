"""The napari-labelprop client, replayed: the exact requests napari-labelprop-remote's widget
sends (`_widget.py`): paths joined to `http://HOST:PORT` with no prefix, no credentials,
multipart bodies encoded like `requests.post(url, files={'arrays': buf, 'params': bytes})`
(parts named and file-named after their key, no per-part Content-Type), query strings built
by hand (`?token=`) or by `params={'token': ...}`."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from urllib.parse import urljoin

import numpy as np
from django.test import Client

from apps.core.tenancy import Role
from ml import labelprop as lp
from tests.factories import add_member, make_user

SERVICE_USER = "napari-svc"


def enable(settings, project, *, role: str = Role.MEMBER, username: str = SERVICE_USER):
    """Turn the surface on, bound to `project` and a service user with `role` in it."""
    from apps.accounts.models import User

    user = User.objects.filter(username=username).first()
    if user is None:
        user = make_user(username, is_service_account=True)
    add_member(project, user, role)
    settings.LABELPROP_ENABLED = True
    settings.LABELPROP_PROJECT = project.pk
    settings.LABELPROP_USER = username
    return user


def multipart(fields: dict[str, bytes]) -> tuple[bytes, str]:
    """(body, Content-Type) as `requests` encodes `files={name: data}` (urllib3's encoder)."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, data in fields.items():
        body.write(f"--{boundary}\r\n".encode())
        body.write(
            f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n\r\n'.encode()
        )
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def npz_bytes(**arrays) -> bytes:
    """`create_buf_npz`: np.savez_compressed into a buffer."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def md5(img: np.ndarray) -> str:
    """`hash_array(image.data.astype('float32'))`."""
    return hashlib.md5(img.astype("float32").tobytes()).hexdigest()


def small_volume(shape=(8, 32, 32), every: int = 3, seed: int = 0):
    img, labels = lp.make_volume(shape, seed=seed)
    return img, labels, lp.sparse_annotation(labels, every)


def checkpoint_bytes(base_channels: int = 4, seed: int = 0) -> bytes:
    return lp.checkpoint_to_bytes(lp.build_net(base_channels, seed=seed), {"size": 32})


class Napari:
    """napari-labelprop-remote's calls, one method per call site of `_widget.py`."""

    def __init__(self, client: Client | None = None, remote_addr: str = "127.0.0.1") -> None:
        # CSRF checks on, as for any real client: the surface must not need a CSRF token.
        self.client = client or Client(enforce_csrf_checks=True)
        self.extra = {"REMOTE_ADDR": remote_addr}

    # -- plain GETs -----------------------------------------------------------------------------
    def get(self, route: str, query: str = ""):
        return self.client.get("/" + route + query, **self.extra)

    def check(self):
        return self.get("check")

    def list_ckpts(self) -> list[str]:
        """get_ckpts(): `.text.split(',')`, sorted."""
        return sorted(self.get("list_ckpts").content.decode().split(","))

    def list_hash(self) -> list[str]:
        return self.get("list_hash").content.decode().split(",")

    def session_exists(self, token: str) -> bool:
        return token in self.get("get_session_list").content.decode()

    def download(self, token: str):
        """`urljoin(url, 'download_inference') + '?token=' + token`."""
        return self.get("download_inference", "?token=" + token)

    def session_info(self, token: str):
        """`requests.get(r, params={'token': token})` then `json.loads(.text)`."""
        return self.get("get_session_info", "?token=" + token)

    # -- the two session routes -----------------------------------------------------------------
    def post_arrays(self, route: str, arrays: dict, params: dict | bytes):
        raw = params if isinstance(params, bytes) else json.dumps(params).encode("utf-8")
        body, content_type = multipart({"arrays": npz_bytes(**arrays), "params": raw})
        return self.client.generic("POST", "/" + route, body, content_type, **self.extra)

    def _arrays(self, img, labels, hints=None) -> tuple[dict, dict]:
        params: dict = {}
        arrays = {"mask": labels.astype("uint8")}
        digest = md5(img)
        if digest in self.list_hash():
            params["hash"] = digest
        else:
            arrays["img"] = img.astype("float32")
        if hints is not None:  # `if hints != '': arrays['hints'] = hints_data.astype('uint8')`
            arrays["hints"] = hints.astype("uint8")
        return arrays, params

    def inference(
        self,
        img,
        labels,
        *,
        z_axis=0,
        label=0,
        checkpoint="",
        criteria="ncc",
        reduction="none",
        gpu=True,
        hints=None,
    ):
        """inference_function(): answers the response (its text is the token)."""
        params = {
            "z_axis": z_axis,
            "label": label,
            "checkpoint": checkpoint,
            "criteria": criteria,
            "reduction": reduction,
            "device": "cuda" if gpu else "cpu",
        }
        arrays, extra = self._arrays(img, labels, hints)
        return self.post_arrays("inference", arrays, {**params, **extra})

    def training(
        self,
        img,
        labels,
        *,
        pretrained_checkpoint="",
        shape=256,
        z_axis=0,
        max_epochs=10,
        checkpoint_name="",
        criteria="ncc",
        reduction="none",
        gpu=True,
    ):
        """training_function(): answers the response (its text is the token)."""
        params = {
            "pretrained_ckpt": pretrained_checkpoint,
            "shape": shape,
            "z_axis": z_axis,
            "max_epochs": max_epochs,
            "name": checkpoint_name,
            "pretraining": False,
            "criteria": criteria,
            "reduction": reduction,
            "device": "cuda" if gpu else "cpu",
        }
        arrays, extra = self._arrays(img, labels)
        return self.post_arrays("training", arrays, {**params, **extra})

    def send_ckpt(self, name: str, data: bytes):
        """`requests.post(url + '/send_ckpt', files={'ckpt': open(path)})`: file name = name."""
        boundary = uuid.uuid4().hex
        body = (
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="ckpt"; filename="{name}"\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.client.generic(
            "POST",
            "/send_ckpt",
            body,
            f"multipart/form-data; boundary={boundary}",
            **self.extra,
        )

    def set_ckpt_dir(self, value: str):
        return self.client.generic("POST", "/set_ckpt_dir?ckpt_dir=" + value, b"", **self.extra)


def run_session_task(token: str):
    """Run the session's task here, synchronously (what a worker would do)."""
    from apps.mlbackend.models import LabelpropSession
    from apps.tasks.runner import task_run

    session = LabelpropSession.objects.get(pk=token)
    assert session.task_id is not None, session.error
    task_run(str(session.task_id))
    session.task.refresh_from_db()
    return session.task


def load_npz(content: bytes) -> dict[str, np.ndarray]:
    """What the client does with the download: np.load(io.BytesIO(content))."""
    with np.load(io.BytesIO(content), encoding="latin1") as data:
        return {k: data[k] for k in data.files}


def refusal(napari: Napari, response) -> str:
    """What the napari client shows for a refused `/inference` or `/training`: it takes the body
    for a token and polls `/get_session_list` until the token is in it, then downloads; the
    download is not an npz, so it shows its text ("Server-side error: ..."). Returns that text
    (the reason), after checking each step of the loop ends."""
    token = response.content.decode()
    assert str(uuid.UUID(token)) == token, token
    assert napari.session_exists(token)
    download = napari.download(token)
    assert download.status_code == 409
    text = download.content.decode()
    assert text.startswith("Session failed: Request refused (")
    assert response["X-Labelprop-Error"][:40] in text
    return text


class ServerSideError(Exception):
    """What napari-labelprop-remote raises (and napari shows) when the download is no npz."""


class RealClient:
    """napari-labelprop-remote's `inference_function` / `training_function`, call for call,
    with `requests` against a running server: post the npz and params as `files=`, take the
    answer's text for the token whatever its status, poll `/get_session_list` until the token
    is in it (the widget sleeps 5 s between polls, forever; here the polls are counted and the
    test fails instead of hanging), download `?token=` + token and np.load it, else raise
    "Server-side error: " + the text."""

    def __init__(self, base_url: str, max_polls: int = 3) -> None:
        self.url = base_url.rstrip("/") + "/"
        self.max_polls = max_polls

    def _get(self, route: str, **kwargs):
        import requests

        return requests.get(urljoin(self.url, route), timeout=10, **kwargs)

    def _hashes(self) -> list[str]:
        return self._get("list_hash").text.split(",")

    def _session_exists(self, token: str) -> bool:
        return token in self._get("get_session_list").text

    def _run(self, route: str, img, labels, params: dict, arrays_bytes: bytes | None = None):
        import requests

        arrays = {"mask": labels.astype("uint8")}
        digest = md5(img)
        if digest in self._hashes():
            params["hash"] = digest
        else:
            arrays["img"] = img.astype("float32")
        buf = io.BytesIO(arrays_bytes if arrays_bytes is not None else npz_bytes(**arrays))
        response = requests.post(
            urljoin(self.url, route),
            files={"arrays": buf, "params": json.dumps(params).encode("utf-8")},
            timeout=60,
        )
        token = response.text
        polls = 0
        while not self._session_exists(token):
            polls += 1
            assert polls < self.max_polls, f"the client would poll forever for {token!r}"
        download = self._get("download_inference?token=" + token)
        try:
            data = np.load(io.BytesIO(download.content), encoding="latin1")
            return data["Y_up"], data["Y_down"], data["Y_fused"]
        except Exception:
            raise ServerSideError("Server-side error: " + download.text) from None

    def inference(self, img, labels, *, checkpoint: str, z_axis: int = 0, **kwargs):
        params = {
            "z_axis": z_axis,
            "checkpoint": checkpoint,
            "criteria": "ncc",
            "reduction": "none",
            "device": "cuda",
        }
        return self._run("inference", img, labels, params, **kwargs)

    def training(self, img, labels, *, name: str = "", shape: int = 256, max_epochs: int = 10):
        params = {
            "pretrained_ckpt": "",
            "shape": shape,
            "z_axis": 0,
            "max_epochs": max_epochs,
            "name": name,
            "pretraining": False,
            "criteria": "ncc",
            "reduction": "none",
            "device": "cuda",
        }
        return self._run("training", img, labels, params)
