"""The Orchard client: one authenticated HTTP session on one project.

```python
from orchard_client import Client

client = Client("http://127.0.0.1:8000", username="admin", password="...", project="demo")
for dataset in client.datasets.list():
    print(dataset["name"], dataset["num_samples"])
```

Tokens: the client logs in with the password (or starts from a given access/refresh pair), refreshes
the access token before it expires and once more when an answer says 401 (the refresh token
rotates; with a password it logs in again when the refresh token is gone too). `on_tokens` is called
with every new pair (the CLI saves them). The project is chosen once (`project=`, else the one the
login answered) and used in every project-scoped route; `use_project()` changes it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from . import resources as r
from .errors import ConnectionFailed, OrchardError, Unauthorized, error_from_response

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all; 0 when unknown)

_REFRESH_MARGIN_S = 30  # refresh an access token this long before it expires
_MAX_ERROR_BODY = 64 * 1024  # bytes of an error answer read from a streamed response
MAX_JSON_BYTES = 64 * 1024 * 1024  # the largest JSON answer the client reads


def _jwt_exp(token: str | None) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only to refresh in time)."""
    if not token or token.count(".") != 2:
        return None
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload.encode())).get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (ValueError, TypeError, AttributeError):
        return None


def q(value: Any) -> str:
    """One path segment, escaped (ids come from users and servers alike)."""
    return quote(str(value), safe="")


class Client:
    """An authenticated session with an Orchard server, scoped to one project."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        refresh_token: str | None = None,
        project: str | None = None,
        timeout: float = 60.0,
        on_tokens: Callable[[dict], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {url!r})")
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.token = token
        self.refresh_token = refresh_token
        self._project = project
        self.on_tokens = on_tokens
        self.timeout = timeout
        self.max_json_bytes = MAX_JSON_BYTES
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            headers={"User-Agent": "orchard-client/0.1", "Accept": "application/json"},
        )
        if not token and not refresh_token and username and password:
            self.login()
        # Resources.
        self.projects = r.Projects(self)
        self.members = r.Members(self)
        self.users = r.Users(self)
        self.datasets = r.Datasets(self)
        self.uploads = r.Uploads(self)
        self.studio = r.StudioDataset(self)
        self.splits = r.Splits(self)
        self.clusters = r.Clusters(self)
        self.models = self.clusters
        self.checkpoints = r.Checkpoints(self)
        self.hosts = r.Hosts(self)
        self.tasks = r.Tasks(self)
        self.results = r.Results(self)
        self.experiments = r.Experiments(self)
        self.runs = r.Runs(self)
        self.evaluations = r.Evaluations(self)
        self.exports = r.Exports(self)
        self.labelstudio = r.LabelStudio(self)
        self.marketplace = r.Marketplace(self)
        self.system = r.System(self)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, project={self._project!r})"

    # -- project --------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        if not self._project:
            raise OrchardError(
                "No project chosen: pass project=... (or `orchard login --project`).",
                code="NO_PROJECT",
            )
        return self._project

    def use_project(self, project_id: str) -> None:
        """Work in another project from now on (membership is checked by each request)."""
        self._project = project_id

    # -- auth -----------------------------------------------------------------------------------
    def _set_tokens(self, access: str, refresh: str | None, project_id: str | None) -> None:
        self.token = access
        if refresh:
            self.refresh_token = refresh
        if not self._project and project_id:
            self._project = project_id
        if self.on_tokens:
            self.on_tokens(
                {"access": self.token, "refresh": self.refresh_token, "project": self._project}
            )

    def login(self, username: str | None = None, password: str | None = None) -> dict:
        """Log in with a password; returns the login answer (tokens, user, project_id)."""
        username = username or self.username
        password = password or self._password
        if not username or not password:
            raise Unauthorized("A username and a password are needed to log in.")
        self.username, self._password = username, password
        body: dict[str, Any] = {"username": username, "password": password}
        if self._project:
            body["project_id"] = self._project
        data = self.request("POST", "/api/auth/token", json=body, auth=False)
        self._set_tokens(data["access"], data.get("refresh"), data.get("project_id"))
        return data

    def refresh(self) -> None:
        """A new access token from the refresh token (else by logging in again)."""
        if self.refresh_token:
            try:
                data = self.request(
                    "POST",
                    "/api/auth/token/refresh",
                    json={"refresh": self.refresh_token},
                    auth=False,
                )
                self._set_tokens(data["access"], data.get("refresh"), data.get("project_id"))
                return
            except Unauthorized:
                self.refresh_token = None
        if self.username and self._password:
            self.login()
            return
        raise Unauthorized("The session expired: log in again (`orchard login`).")

    def logout(self) -> None:
        if self.refresh_token and self.token:
            try:
                self.request("POST", "/api/auth/logout", json={"refresh": self.refresh_token})
            except OrchardError:
                pass
        self.token = self.refresh_token = None

    def access_token(self) -> str:
        """A valid access token (refreshed when it expires within half a minute)."""
        exp = _jwt_exp(self.token)
        if not self.token or (exp is not None and exp - time.time() < _REFRESH_MARGIN_S):
            self.refresh()
        assert self.token
        return self.token

    def me(self) -> dict:
        return self.request("GET", "/api/auth/me")

    # -- HTTP -----------------------------------------------------------------------------------
    def _headers(self, auth: bool, extra: dict | None) -> dict:
        headers = dict(extra or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.access_token()}"
        return headers

    def send(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        stream: bool = False,
        headers: dict | None = None,
        retry_auth: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request and return the (successful) response; raises typed errors.

        A 401 refreshes the token and sends once more when the body can be sent again."""
        try:
            request = self.http.build_request(
                method, path, headers=self._headers(auth, headers), **kwargs
            )
            response = self.http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {self.url}{path}: {exc}") from exc
        if response.status_code == 401 and auth and retry_auth:
            response.close()
            self.refresh()
            return self.send(
                method,
                path,
                auth=auth,
                stream=stream,
                headers=headers,
                retry_auth=False,
                **kwargs,
            )
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @staticmethod
    def _error(response: httpx.Response) -> OrchardError:
        try:
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > _MAX_ERROR_BODY:
                    break
        except (httpx.StreamConsumed, httpx.ResponseNotRead):
            raw = response.content[:_MAX_ERROR_BODY]
        except httpx.TransportError:
            pass
        finally:
            response.close()
        try:
            body = json.loads(raw.decode("utf-8", errors="replace"))
        except ValueError:
            body = None
        return error_from_response(response.status_code, body, raw.decode(errors="replace"))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the envelope's `data` (None for an empty answer).

        The answer is read as a stream and refused past `max_json_bytes`, so a hostile or
        broken server cannot make the client hold an unbounded body."""
        response = self.send(method, path, stream=True, **kwargs)
        raw = bytearray()
        try:
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > self.max_json_bytes:
                    raise OrchardError(
                        f"{method} {path}: the answer is larger than {self.max_json_bytes} bytes.",
                        code="BAD_RESPONSE",
                        status=response.status_code,
                    )
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {self.url}{path}: {exc}") from exc
        finally:
            response.close()
        if not raw:
            return None
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise OrchardError(
                f"{method} {path}: the answer is not JSON ({bytes(raw[:200])!r})",
                code="BAD_RESPONSE",
                status=response.status_code,
            ) from exc
        if isinstance(body, dict) and body.get("status") == "ok" and "data" in body:
            return body["data"]
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_params(params))

    def paginate(self, path: str, *, page_size: int = 100, **params: Any) -> Iterator[dict]:
        """Every item of a list route, page after page. A route answering a plain list is
        iterated as is; a page object `{items, page, pages, ...}` is followed to its end."""
        page = 1
        while True:
            data = self.request(
                "GET", path, params=_params({**params, "page": page, "page_size": page_size})
            )
            if isinstance(data, list):
                yield from data
                return
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise OrchardError(
                    f"GET {path}: expected a list or a page of items.", code="BAD_RESPONSE"
                )
            items = data["items"]
            yield from items
            pages = data.get("pages")
            if not items or (isinstance(pages, int) and page >= pages):
                return
            if pages is None and len(items) < page_size:
                return
            page += 1

    def download(
        self,
        path: str,
        dest: str | Path,
        *,
        progress: ProgressCallback | None = None,
        chunk_size: int = 256 * 1024,
    ) -> Path:
        """Stream a file route to `dest` (a file, or a folder: then the server's file name)."""
        response = self.send("GET", path, stream=True, headers={"Accept": "*/*"})
        try:
            dest = Path(dest)
            if dest.is_dir():
                name = _attachment_name(response.headers.get("content-disposition", ""))
                dest = dest / (name or Path(path).name or "download")
            total = int(response.headers.get("content-length") or 0)
            done = 0
            tmp = dest.with_name(dest.name + ".part")
            with open(tmp, "wb") as fh:
                for chunk in response.iter_bytes(chunk_size):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            if total and done != total:
                raise ConnectionFailed(f"download ended after {done} of {total} bytes")
            tmp.replace(dest)
            return dest
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"download of {path} broke: {exc}") from exc
        finally:
            response.close()

    # -- websockets -----------------------------------------------------------------------------
    def ws_url(self, path: str, **params: Any) -> str:
        base = (
            "wss://" + self.url[8:] if self.url.startswith("https://") else "ws://" + self.url[7:]
        )
        query = urlencode(_params(params))
        return base + path + (("?" + query) if query else "")

    def ws_connect(self, path: str, **params: Any):
        """A websocket (websockets' sync client) on a main-API socket route, authenticated with
        the Authorization header."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        try:
            return connect(
                self.ws_url(path, **params),
                additional_headers={"Authorization": f"Bearer {self.access_token()}"},
                open_timeout=min(self.timeout, 30),
                max_size=64 * 1024 * 1024,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise error_from_response(status, None, f"websocket refused ({status})") from exc
        except OSError as exc:
            raise ConnectionFailed(f"websocket {path}: {exc}") from exc

    def directio(self, cluster_id: str, *, switch_mode: bool = False):
        """Direct io on a cluster in DIRECT mode (`switch_mode=True` switches it there on enter
        and back to TASK on exit)."""
        from .directio import DirectIO

        return DirectIO(self, cluster_id, switch_mode=switch_mode)


def _params(params: dict) -> dict:
    return {k: v for k, v in params.items() if v is not None}


def _attachment_name(disposition: str) -> str | None:
    for part in disposition.split(";"):
        part = part.strip()
        if part.lower().startswith("filename="):
            name = part[9:].strip().strip('"')
            name = Path(name).name  # never a path from the server
            return name or None
    return None
