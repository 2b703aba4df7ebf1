"""Direct io: numpy in, numpy out over a cluster's io websocket, in binary frames.

```python
with client.directio(cluster_id, switch_mode=True) as io:
    scores = io.request(x)          # x: (N, inputs) -> (N, outputs) float32 softmax scores
    loss = io.train(x, y_onehot)    # one optimisation step on the in-memory model
```

A request is `b"R"` + N x inputs little-endian float32 values; the answer N x outputs float32. A
train step is `b"T"` + N x inputs + N x outputs values; the answer one float32, the loss. An error
comes back as a JSON frame and raises a typed error; the socket stays open."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from .errors import OrchardError, ValidationError, error_from_response

if TYPE_CHECKING:
    from .client import Client

_ERROR_STATUS = {"VALIDATION_ERROR": 422, "FORBIDDEN": 403, "NOT_FOUND": 404, "CONFLICT": 409}


class DirectIO:
    """A context manager over `ws/projects/{project}/clusters/{cluster_id}/io`."""

    def __init__(self, client: Client, cluster_id: str, *, switch_mode: bool = False):
        self.client = client
        self.cluster_id = cluster_id
        self.switch_mode = switch_mode
        self.ws = None
        self.inputs: dict[str, int] = {}
        self.outputs: dict[str, int] = {}
        self.can_train = False

    def __enter__(self) -> DirectIO:
        from .client import q

        if self.switch_mode:
            self.client.clusters.set_mode(self.cluster_id, "DIRECT")
        project = q(self.client.project)
        try:
            ws = self.client.ws_connect(f"/ws/projects/{project}/clusters/{q(self.cluster_id)}/io")
            self.ws = ws.__enter__()  # the connection as its own context (closed by close())
            ready = self._json(self.ws.recv(timeout=self.client.timeout))
            if ready.get("type") != "ready":
                raise OrchardError(f"unexpected first frame {ready!r}", code="BAD_RESPONSE")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.inputs = dict(ready.get("inputs") or {})
        self.outputs = dict(ready.get("outputs") or {})
        self.can_train = bool(ready.get("can_train"))
        return self

    def __exit__(self, *exc) -> None:
        # Back to TASK mode before the socket closes: the server then writes the weights back
        # once, while no socket's own write-back can contend with the mode switch for the row.
        try:
            if self.switch_mode:
                self.client.clusters.set_mode(self.cluster_id, "TASK")
        finally:
            self.close()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    @property
    def input_size(self) -> int:
        return self._single(self.inputs, "input")

    @property
    def output_size(self) -> int:
        return self._single(self.outputs, "output")

    @staticmethod
    def _single(bricks: dict[str, int], what: str) -> int:
        if len(bricks) != 1:
            raise ValidationError(f"Binary frames need exactly one {what} brick ({bricks}).")
        return int(next(iter(bricks.values())))

    def _json(self, message) -> dict:
        if isinstance(message, bytes):
            raise OrchardError("expected a JSON frame, got binary", code="BAD_RESPONSE")
        data = json.loads(message)
        if not isinstance(data, dict):
            raise OrchardError("expected a JSON object frame", code="BAD_RESPONSE")
        return data

    def _exchange(self, frame: bytes) -> np.ndarray:
        if self.ws is None:
            raise OrchardError("the direct-io socket is closed", code="CLOSED")
        self.ws.send(frame)
        answer = self.ws.recv(timeout=self.client.timeout)
        if isinstance(answer, str):
            data = self._json(answer)
            err = data.get("error") if isinstance(data.get("error"), dict) else {}
            code = err.get("code") or "ERROR"
            raise error_from_response(
                _ERROR_STATUS.get(code, 400), {"error": err}, str(data.get("type"))
            )
        return np.frombuffer(answer, dtype="<f4")

    def _matrix(self, values, width: int, what: str) -> np.ndarray:
        array = np.asarray(values, dtype="<f4")
        if array.ndim == 1:
            array = array.reshape(1, -1)
        array = array.reshape(array.shape[0], -1)
        if array.shape[1] != width:
            raise ValidationError(f"{what} must have {width} values per sample.")
        return np.ascontiguousarray(array)

    def request(self, x) -> np.ndarray:
        """Forward pass: (N, inputs) -> (N, outputs) softmax scores."""
        x = self._matrix(x, self.input_size, "inputs")
        out = self._exchange(b"R" + x.tobytes())
        return out.reshape(x.shape[0], self.output_size)

    def train(self, x, y) -> float:
        """One optimisation step on (N, inputs) against (N, outputs) expected values; the loss."""
        x = self._matrix(x, self.input_size, "inputs")
        y = self._matrix(y, self.output_size, "expected values")
        if x.shape[0] != y.shape[0]:
            raise ValidationError("inputs and expected values hold different sample counts.")
        out = self._exchange(b"T" + x.tobytes() + y.tobytes())
        return float(out[0])
