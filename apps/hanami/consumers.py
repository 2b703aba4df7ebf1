"""The Hanami websocket on path `/`.

The SDK sends its token in the FIRST frame (text JSON `{"token", "target", "uuid"}`), so this
consumer cannot be a ProjectScopedConsumer (which authorizes before accept()). It accepts the
socket, then authenticates that first frame itself through `apps.hanami.access` (the gateway's
views resolve the token's project there too) and fetches its object through the scoped querysets;
the answer is one binary frame with JSON
`{"success": true, "uuid": <connection id>}` or `{"success": false, "error": ...}` (then close).

Targets:
- `file_upload`: `uuid` is an upload session of the token's project that the caller may edit.
  Every binary frame is a FileUpload_Message written at its position and answered with a
  FileUploadResponse_Message. Rights are re-checked per chunk (token expiry, membership, session).
- `cluster`: direct io on a cluster of the token's project in DIRECT mode (see
  `apps.clusters.directio`). Every binary frame is a ClusterIO_Message carrying the values of one
  brick and is answered: a message with isLast=false is buffered and answered
  `{isLast: false, TRAIN_TYPE, values: [0.0]}`; a last TRAIN message runs one training step on the
  buffered input and expected-output bricks and is answered `{isLast: true, TRAIN_TYPE,
  values: [0.0]}`; a last REQUEST message runs the network and is answered with a
  ClusterIO_Message per output brick (the output brick's name and softmax scores; the last one
  has isLast=true). A message that cannot be served (unknown brick, wrong number of values,
  expired token, cluster left DIRECT mode) is answered with the JSON error frame
  `{"success": false, "error": ...}` and the socket is closed (4400, or 4401 for the token).

Every WEBSOCKET_RECHECK_S (default 5) an open socket re-authenticates its token and re-fetches its
object, also while no frame comes: when the token expired, the user left the project or the
object is gone, it sends `{"success": false, "error": ...}` and closes (4401).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import ClassVar

import numpy as np
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from google.protobuf.message import DecodeError

from apps.core.conf import number_setting
from apps.core.consumers import (
    ClosesOnceMixin,
    DatabaseFreeReceiveMixin,
    RecheckLoop,
    token_expired,
)
from apps.core.events import group_name
from apps.core.exceptions import NotFound, OrchardError, Unauthorized
from apps.core.tenancy import ProjectAccess
from apps.datasets import uploads as datasets
from apps.hanami.access import socket_cluster, socket_upload, token_access
from apps.hanami.proto.messages import (
    REQUEST_TYPE,
    TRAIN_TYPE,
    ClusterIO_Message,
    FileUpload_Message,
    FileUploadResponse_Message,
)

CLOSE_REFUSED = 4401
CLOSE_BAD_MESSAGE = 4400
TARGETS = ("cluster", "file_upload")


def _open_cluster(access: ProjectAccess, cluster_id, expires_at):
    from apps.clusters.directio import DirectIoSession

    cluster = socket_cluster(access, cluster_id)
    return DirectIoSession.open(access=access, cluster=cluster, expires_at=expires_at)


def _recheck(raw_token: str, target: str, object_id: str, session) -> None:
    """Sync: the token still valid and its user still allowed to use the socket's object."""
    access, _ = token_access(raw_token)
    if target == "file_upload":
        socket_upload(access, object_id, uploading=False)
    else:
        cluster = socket_cluster(access, object_id)
        if session is not None:
            session.can_train = access.can_edit(cluster)


def _write_chunk(raw_token: str, session_id: str, position: int, data: bytes) -> None:
    access, _ = token_access(raw_token)
    session = socket_upload(access, session_id)
    try:
        datasets.upload_session_write(session=session, position=position, data=data)
    except OSError:
        raise NotFound("Upload file not found.") from None


class HanamiSocketConsumer(ClosesOnceMixin, DatabaseFreeReceiveMixin, AsyncWebsocketConsumer):
    tenancy_exempt_reason: ClassVar[str] = (
        "authenticates from its first frame through apps.hanami.access, like the gateway's views"
    )

    async def connect(self):
        self.connection_id = str(uuid.uuid4())
        self.target = None
        self.raw_token = None
        self.token_exp = None
        self.object_id = None
        self.session = None
        self.buffer: dict[str, np.ndarray] = {}
        self.group = None
        self.rights_loop = None
        self.first_frame_timer = None
        await self.accept()
        # A socket that never authenticates would be held for ever (daphne's pings keep it up).
        self.first_frame_timer = asyncio.get_running_loop().create_task(self._first_frame_due())

    async def _first_frame_due(self) -> None:
        seconds = number_setting("HANAMI_FIRST_FRAME_S")
        await asyncio.sleep(seconds)
        if self.target is None:
            await self._refuse(f"No first message {{token, target, uuid}} within {seconds:g} s.")

    def database_free_receive(self) -> bool:
        return getattr(self, "session", None) is not None

    async def disconnect(self, code):
        if self.first_frame_timer is not None:
            self.first_frame_timer.cancel()
        if self.rights_loop is not None:
            self.rights_loop.cancel()
        if self.group and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.session is not None:
            await database_sync_to_async(self.session.release)()

    async def _refuse(self, message: str) -> None:
        await self.send(bytes_data=json.dumps({"success": False, "error": message}).encode())
        await self.close(code=CLOSE_REFUSED)

    async def receive(self, text_data=None, bytes_data=None):
        if self.target is None:
            await self._handshake(text_data if text_data is not None else bytes_data)
        elif self.target == "file_upload":
            await self._upload(bytes_data)
        elif self.target == "cluster":
            await self._direct_io(bytes_data)
        else:
            await self._refuse("Unexpected message.")

    # -- handshake --------------------------------------------------------------------------
    async def _handshake(self, raw) -> None:
        if (
            self.first_frame_timer is not None
            and self.first_frame_timer is not asyncio.current_task()
        ):
            self.first_frame_timer.cancel()
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            first = json.loads(raw)
        except (UnicodeDecodeError, ValueError, TypeError, RecursionError):
            await self._refuse("The first message must be JSON {token, target, uuid}.")
            return
        if not isinstance(first, dict):
            await self._refuse("The first message must be JSON {token, target, uuid}.")
            return
        target = first.get("target")
        if target not in TARGETS:
            await self._refuse(f"target must be one of {', '.join(TARGETS)}.")
            return
        try:
            access, payload = await database_sync_to_async(token_access)(first.get("token"))
            if target == "file_upload":
                session = await database_sync_to_async(socket_upload)(access, first.get("uuid"))
                self.object_id = str(session.pk)
            else:
                self.session = await database_sync_to_async(_open_cluster)(
                    access, first.get("uuid"), payload.get("exp")
                )
                self.object_id = self.session.runtime.cluster_id
        except OrchardError as exc:
            await self._refuse(exc.message)
            return
        self.target = target
        if target == "cluster" and self.channel_layer is not None:
            self.group = group_name("cluster", self.object_id)
            await self.channel_layer.group_add(self.group, self.channel_name)
        self.raw_token = first["token"]
        self.token_exp = payload.get("exp")
        await self.send(
            bytes_data=json.dumps({"success": True, "uuid": self.connection_id}).encode()
        )
        self.rights_loop = RecheckLoop(self._recheck_rights, self._rights_gone)
        self.rights_loop.start()

    async def _recheck_rights(self) -> None:
        if token_expired({"exp": self.token_exp}):
            raise Unauthorized("Token is invalid or expired.")
        await database_sync_to_async(_recheck)(
            self.raw_token, self.target, self.object_id, self.session
        )

    async def _rights_gone(self, exc: OrchardError) -> None:
        await self._refuse(exc.message)

    # -- file upload ------------------------------------------------------------------------
    async def _upload_answer(self, error: str = "") -> None:
        answer = FileUploadResponse_Message(success=not error, errorMessage=error)
        await self.send(bytes_data=answer.SerializeToString())

    async def _upload(self, raw: bytes | None) -> None:
        if self.token_exp is not None and time.time() >= self.token_exp:
            await self._upload_answer("Token is invalid or expired.")
            await self.close(code=CLOSE_REFUSED)
            return
        if raw is None:
            await self._upload_answer("Expected a binary FileUpload_Message.")
            return
        try:
            message = FileUpload_Message.FromString(raw)
        except DecodeError:
            await self._upload_answer("Malformed FileUpload_Message.")
            return
        try:
            await database_sync_to_async(_write_chunk)(
                self.raw_token, self.object_id, int(message.position), bytes(message.data)
            )
        except (Unauthorized, NotFound) as exc:
            await self._upload_answer(exc.message)
            await self.close(code=CLOSE_REFUSED)
            return
        except OrchardError as exc:
            await self._upload_answer(exc.message)
            return
        await self._upload_answer()

    # -- direct io --------------------------------------------------------------------------
    async def _io_error(self, message: str, code: int = CLOSE_BAD_MESSAGE) -> None:
        await self.send(bytes_data=json.dumps({"success": False, "error": message}).encode())
        await self.close(code=code)

    async def _direct_io(self, raw: bytes | None) -> None:
        if raw is None:
            await self._io_error("Expected a binary ClusterIO_Message.")
            return
        try:
            message = ClusterIO_Message.FromString(raw)
        except DecodeError:
            await self._io_error("Malformed ClusterIO_Message.")
            return
        # Straight from the repeated field into float32: ~6x faster than through a list.
        values = np.array(message.values, dtype=np.float32)
        if message.numberOfValues and message.numberOfValues != len(values):
            await self._io_error(
                f"numberOfValues is {message.numberOfValues} but {len(values)} values came."
            )
            return
        runtime = self.session.runtime
        name = message.brickName
        if name not in runtime.inputs and name not in runtime.outputs:
            bricks = ", ".join([*runtime.inputs, *runtime.outputs])
            await self._io_error(f"Unknown brick {name!r} (this cluster has {bricks}).")
            return
        self.buffer[name] = values
        if not message.isLast:
            await self.send(bytes_data=_io_answer(False, TRAIN_TYPE))
            return
        buffered, self.buffer = self.buffer, {}
        inputs = {k: v for k, v in buffered.items() if k in runtime.inputs}
        try:
            if message.processType == TRAIN_TYPE:
                expected = {k: v for k, v in buffered.items() if k in runtime.outputs}
                await self.session.train(inputs, expected)
                await self.send(bytes_data=_io_answer(True, TRAIN_TYPE))
                return
            outputs = await self.session.request(inputs)
        except Unauthorized as exc:
            await self._io_error(exc.message, CLOSE_REFUSED)
            return
        except OrchardError as exc:
            await self._io_error(exc.message)
            return
        names = list(outputs)
        for index, out_name in enumerate(names):
            scores = outputs[out_name].reshape(-1).tolist()
            await self.send(
                bytes_data=_io_answer(
                    index == len(names) - 1, REQUEST_TYPE, name=out_name, values=scores
                )
            )

    async def orchard_event(self, message) -> None:
        if message.get("event", {}).get("type") == "directio.closed":
            await self._io_error("The cluster left DIRECT mode.")


def _io_answer(is_last: bool, process_type: int, *, name: str = "", values=None) -> bytes:
    if values is None:
        values = [0.0]
    answer = ClusterIO_Message(
        brickName=name, isLast=is_last, processType=process_type, numberOfValues=len(values)
    )
    answer.values.extend(values)
    return answer.SerializeToString()
