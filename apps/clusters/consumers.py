"""Direct io in the main API: `ws/projects/<project_id>/clusters/<cluster_id>/io`.

The cluster must be in DIRECT mode (`PUT .../clusters/<id>/mode`). Authenticated like every
main-API socket (JWT in the `Authorization` header, `?token=` or the `bearer` subprotocol); the
caller must see the cluster, and training needs edit rights on it.

JSON frames (text):
    {"type": "request", "inputs": {"<input brick>": [values...]}, "id": any}
        -> {"type": "output", "outputs": {"<output brick>": [[scores...], ...]}, "id": ...}
    {"type": "train", "inputs": {...}, "expected": {"<output brick>": [values...]}, "id": any}
        -> {"type": "trained", "loss": float, "id": ...}
    {"type": "ping"} -> {"type": "pong"}
  Values are flat (a multiple of the brick's size: several samples) or nested per sample.
  Errors answer {"type": "error", "error": {"code", "message"}, "id": ...}; the socket stays
  open except on expiry/closing (close code 4401 / 4409).

Binary frames (clusters with one input and one output brick), little-endian float32:
    b"R" + N * input_size floats                        -> N * output_size softmax scores
    b"T" + N * input_size floats + N * output_size floats -> one float: the loss
  A bad binary frame is answered with a JSON error frame.
"""

from __future__ import annotations

import numpy as np
from channels.db import database_sync_to_async

from apps.clusters.directio import DirectIoSession, RuntimeClosed
from apps.clusters.models import Cluster
from apps.core import jsonframes
from apps.core.consumers import (
    CLOSE_UNAUTHORIZED,
    DatabaseFreeReceiveMixin,
    ProjectScopedConsumer,
)
from apps.core.events import group_name
from apps.core.exceptions import OrchardError, Unauthorized, ValidationFailed
from apps.core.tenancy import ProjectAccess

CLOSE_NOT_DIRECT = 4409
OP_REQUEST = ord("R")
OP_TRAIN = ord("T")


class ClusterIoConsumer(DatabaseFreeReceiveMixin, ProjectScopedConsumer):
    session: DirectIoSession | None = None

    def authorize(self, access: ProjectAccess) -> None:
        cluster_id = self.scope["url_route"]["kwargs"].get("cluster_id")
        cluster = Cluster.objects.get_visible(access, pk=cluster_id)
        token = self.scope.get("token")
        expires = token.get("exp") if token is not None else None
        # Raises Conflict (not DIRECT) or ValidationFailed before accept(): closed 4000.
        self.session = DirectIoSession.open(access=access, cluster=cluster, expires_at=expires)
        self.group = group_name("cluster", cluster.pk)

    def reauthorize(self, access: ProjectAccess) -> None:
        """Every WEBSOCKET_RECHECK_S, also while no frame comes: the cluster still visible
        (else closed 4404); training rights follow the caller's current role."""
        cluster = Cluster.objects.get_visible(access, pk=self.session.runtime.cluster_id)
        self.session.can_train = access.can_edit(cluster)

    async def on_open(self) -> None:
        if self.channel_layer is not None:
            await self.channel_layer.group_add(self.group, self.channel_name)
        runtime = self.session.runtime
        await self.send_json(
            {
                "type": "ready",
                "cluster_id": runtime.cluster_id,
                "inputs": runtime.inputs,
                "outputs": runtime.outputs,
                "can_train": self.session.can_train,
            }
        )

    def database_free_receive(self) -> bool:
        return getattr(self, "session", None) is not None

    async def disconnect(self, code) -> None:
        if self.channel_layer is not None and getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.session is not None:
            await database_sync_to_async(self.session.release)()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if bytes_data is not None:
            await self._binary(bytes_data)
        else:
            await super().receive(text_data=text_data, **kwargs)

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return jsonframes.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json decodes
            return None

    async def receive_json(self, content, **kwargs) -> None:
        ident = content.get("id") if isinstance(content, dict) else None
        try:
            if not isinstance(content, dict):
                raise ValidationFailed("Frames must be JSON objects.")
            kind = content.get("type")
            if kind == "ping":
                await self.send_json({"type": "pong", "id": ident})
            elif kind == "request":
                outputs = await self.session.request(_mapping(content, "inputs"))
                answer = {name: value.tolist() for name, value in outputs.items()}
                await self.send_json({"type": "output", "outputs": answer, "id": ident})
            elif kind == "train":
                loss = await self.session.train(
                    _mapping(content, "inputs"), _mapping(content, "expected")
                )
                await self.send_json({"type": "trained", "loss": loss, "id": ident})
            else:
                raise ValidationFailed("type must be request, train or ping.")
        except OrchardError as exc:
            await self._error(exc, ident)

    async def _binary(self, data: bytes) -> None:
        runtime = self.session.runtime
        try:
            if len(runtime.inputs) != 1 or len(runtime.outputs) != 1:
                raise ValidationFailed("Binary frames need one input and one output brick.")
            if len(data) < 1 or (len(data) - 1) % 4:
                raise ValidationFailed("A binary frame is one op byte and float32 values.")
            values = np.frombuffer(data, dtype="<f4", offset=1)
            (in_name, in_size), (out_name, out_size) = (
                next(iter(runtime.inputs.items())),
                next(iter(runtime.outputs.items())),
            )
            if data[0] == OP_REQUEST:
                outputs = await self.session.request({in_name: values})
                scores = np.ascontiguousarray(outputs[out_name], dtype="<f4")  # no copy on LE
                await self.send(bytes_data=scores.tobytes())
            elif data[0] == OP_TRAIN:
                per_sample = in_size + out_size
                if values.size == 0 or values.size % per_sample:
                    raise ValidationFailed(
                        f"A train frame carries N * ({in_size} + {out_size}) values."
                    )
                n = values.size // per_sample
                loss = await self.session.train(
                    {in_name: values[: n * in_size]}, {out_name: values[n * in_size :]}
                )
                await self.send(bytes_data=np.asarray([loss], dtype="<f4").tobytes())
            else:
                raise ValidationFailed("The op byte must be R (request) or T (train).")
        except OrchardError as exc:
            await self._error(exc, None)

    async def _error(self, exc: OrchardError, ident) -> None:
        await self.send_json(
            {"type": "error", "error": {"code": exc.code, "message": exc.message}, "id": ident}
        )
        if isinstance(exc, Unauthorized):
            await self.close(code=CLOSE_UNAUTHORIZED)
        elif isinstance(exc, RuntimeClosed):
            await self.close(code=CLOSE_NOT_DIRECT)

    async def orchard_event(self, message) -> None:
        if message.get("event", {}).get("type") == "directio.closed":
            await self.send_json({"type": "closed", "reason": "The cluster left DIRECT mode."})
            await self.close(code=CLOSE_NOT_DIRECT)


def _mapping(content: dict, key: str) -> dict:
    value = content.get(key)
    if not isinstance(value, dict) or not value:
        raise ValidationFailed(f"{key} must be an object keyed by brick name.")
    return value
