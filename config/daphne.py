"""Daphne (Twisted) tuning applied when the ASGI application loads.

Twisted's `Request.requestReceived` parses every multipart POST body into `request.args` with the
`email` package: about ten in-memory copies of an upload that daphne never reads (it hands the raw
body to the ASGI application). Turning that parsing off cut the peak memory of a 45 MiB MNIST upload
from 568 to 129 MiB and its time by 3x (bench `ingest.*`; twisted/twisted#4519). The body itself
is still queued whole by daphne: large files should use the resumable upload sessions.

Autobahn builds the arguments of two debug lines per websocket frame (received, sent) eagerly, also
when debug logging is off, and colours them with `click.style`: ~25 us of every direct-io message
(a third of the forward pass it answers). Without the colours they cost ~8 us.

Twisted sends a write only when the reactor next finds the socket writable; an open websocket's
frames go out when written instead (`write_websocket_frames_at_once`): direct io's server CPU per
binary message 228 -> 165 us, one socket 3,700 -> 5,300 msg/s on an idle 2-core machine.
"""

import io
import json
import logging
import tempfile

from apps.core.asgi import SpilledBody

logger = logging.getLogger(__name__)


def skip_twisted_form_parsing() -> bool:
    """Patch daphne's request class once; returns whether the patch is in place."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # not served by daphne
        return False
    if getattr(WebRequest, "_orchard_no_form_parsing", False):
        return True
    original = WebRequest.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False  # daphne never reads request.args

    WebRequest.__init__ = __init__
    WebRequest._orchard_no_form_parsing = True
    return True


def plain_autobahn_log_arguments() -> bool:
    """Autobahn's log arguments without terminal colour codes; returns whether it is in place."""
    try:
        from autobahn import util
    except ImportError:  # not served by daphne
        return False
    util._HAS_CLICK = False  # `hl()` then returns its text as it is
    return True


def write_websocket_frames_at_once() -> bool:
    """An open websocket's frames go to the socket when they are written, not a loop pass later.

    Twisted buffers every `transport.write` and sends it when the reactor next finds the socket
    writable: per direct-io answer, an epoll registration, a loop pass and an unregistration
    (~60 us of ~225 in all). Once daphne opens a websocket, its transport sends a write at once when
    nothing is waiting before it; what the kernel does not take (and every write behind it) is
    buffered the usual way, so order, back-pressure and connection-loss handling stay Twisted's.
    HTTP responses keep the buffered path (their header and body writes share one send).
    Returns whether the patch is in place."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
        from twisted.internet import tcp
        from twisted.internet.abstract import _dataMustBeBytes
    except ImportError:  # not served by daphne
        return False
    if getattr(tcp.Server, "_orchard_write_at_once", None) is not None:
        return True
    buffered_write = tcp.Server.write

    def write(self, data):
        if (
            self._orchard_write_at_once
            and data
            and not self.TLS
            and self.connected
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        ):
            _dataMustBeBytes(data)
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent >= 0:  # an error: the buffered path finds it again
                if sent == len(data):
                    return
                data = data[sent:]
        buffered_write(self, data)

    tcp.Server._orchard_write_at_once = False
    tcp.Server.write = write
    opened = WebSocketProtocol.onOpen

    def onOpen(self):
        if isinstance(self.transport, tcp.Server):
            self.transport._orchard_write_at_once = True
        return opened(self)

    WebSocketProtocol.onOpen = onOpen
    return True


def answer_oversized_request_heads() -> bool:
    """A request line or a header line past Twisted's 16 KiB (`MAX_LENGTH`: an Authorization
    header of a huge token, a URL of a huge query) closed the connection with no answer at all,
    and a request whose head broke another of Twisted's rules (all its header lines past
    `totalHeadersSize`, a malformed line) got a bare `400 Bad Request` without a body. Both now
    answer with a status that says why (414 URI too long, 431 header fields too large, 400) and
    a body in the format of the surface that owns the path when the request line was read
    (`apps.core.errors`), else `{"error": ...}`; the connection is closed after it, as before.
    Returns whether the patch is in place."""
    try:
        from twisted.web.http import HTTPChannel
    except ImportError:  # not served by daphne
        return False
    if getattr(HTTPChannel, "_orchard_head_answers", False):
        return True

    def refuse(self, status: int, reason: bytes, message: str) -> None:
        from apps.core.errors import surface_answer

        path = b""
        if not getattr(self, "_HTTPChannel__first_line", 1):  # this request's line was read
            path = (getattr(self, "_path", b"") or b"").split(b"?", 1)[0]
        answer = surface_answer(path.decode("latin-1"), status, message)
        if answer is None:
            answer = (status, "application/json", json.dumps({"error": message}).encode())
        status, content_type, body = answer
        head = (
            f"HTTP/1.1 {status} {reason.decode()}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.loseConnection()

    def lineLengthExceeded(self, line):
        if getattr(self, "_HTTPChannel__first_line", 0):
            message = f"The request line is longer than {self.MAX_LENGTH} bytes."
            refuse(self, 414, b"URI Too Long", message)
        else:
            message = f"A request header line is longer than {self.MAX_LENGTH} bytes."
            refuse(self, 431, b"Request Header Fields Too Large", message)

    def _respondToBadRequestAndDisconnect(self):
        if self._receivedHeaderSize > self.totalHeadersSize:
            message = f"The request's headers are larger than {self.totalHeadersSize} bytes."
            refuse(self, 431, b"Request Header Fields Too Large", message)
        else:
            refuse(self, 400, b"Bad Request", "Malformed request head.")

    HTTPChannel.lineLengthExceeded = lineLengthExceeded
    HTTPChannel._respondToBadRequestAndDisconnect = _respondToBadRequestAndDisconnect
    HTTPChannel._orchard_head_answers = True
    return True


REQUEST_BODY_MESSAGE_BYTES = 1 << 20


def larger_request_body_messages() -> bool:
    """Daphne hands a request body to the application in `http.request` messages of 8 KiB by
    default: 5,800 messages (each a dict, a queue put, a wake-up and a write into Django's body
    file) for a 47 MiB MNIST upload. Daphne queues every message of a body at once, so larger
    messages hold no more memory: 1 MiB each. Applies to servers made after this call (daphne's
    command line builds its server after it imports the application). Returns whether the patch
    is in place."""
    try:
        from daphne.server import Server
    except ImportError:  # not served by daphne
        return False
    if getattr(Server, "_orchard_body_messages", False):
        return True
    original = Server.__init__

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("request_buffer_size", REQUEST_BODY_MESSAGE_BYTES)
        original(self, *args, **kwargs)

    Server.__init__ = __init__
    Server._orchard_body_messages = True
    return True


class BodyBuffer:
    """A request body as Twisted receives it, for daphne to read back: the received bytes objects
    themselves up to `limit` bytes (no copy), then a temporary file holding all of it, which the
    first read hands over whole (`apps.core.asgi.SpilledBody`: one message, the file in it; the
    application owns and closes it, `close()` here leaves it).

    Twisted keeps a body over 100 kB in a temporary file that daphne then reads back whole: an
    8 MiB upload chunk was written to disk and read again before the application saw a byte.
    The bodies held in memory by one server process share `total` bytes (bodies arrive before any
    check: a crowd of slow clients must not fill the memory); a body that would go past either
    bound goes to a file. Only what daphne and Twisted use of a file: write, tell, seek to the
    start, read, close."""

    held = 0  # bytes held in memory by the open bodies of this process (the reactor's thread)

    def __init__(self, limit: int, total: int | None = None):
        self.limit = limit
        self.total = limit if total is None else total
        self.closed = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._index = 0  # read position: chunk, offset in it
        self._offset = 0
        self._file = None

    def write(self, data) -> None:
        if self._file is not None:
            self._file.write(data)
            return
        data = bytes(data)
        if self._size + len(data) > self.limit or BodyBuffer.held + len(data) > self.total:
            self._file = tempfile.TemporaryFile()
            self._file.writelines(self._chunks)
            self._file.write(data)
            self._release()
            return
        self._chunks.append(data)
        self._size += len(data)
        BodyBuffer.held += len(data)

    def _release(self) -> None:
        """Give this body's share of the process's in-memory budget back."""
        BodyBuffer.held -= sum(map(len, self._chunks))
        self._chunks = []

    def tell(self) -> int:
        return self._file.tell() if self._file is not None else self._size

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._file is not None:
            return self._file.seek(offset, whence)
        if (offset, whence) != (0, 0):
            raise OSError("a request body in memory seeks to its start only")
        self._index = self._offset = 0
        return 0

    def read(self, size: int = -1) -> bytes:
        if self._file is not None:
            # The whole body is in the file (daphne reads once the body is complete): handed
            # over as it is, for the application to read in place and close (`SpilledBody`),
            # instead of daphne reading every byte back into the application's queue at once.
            file, self._file, self._size = self._file, None, 0
            size = file.seek(0, io.SEEK_END)
            file.seek(0)
            return SpilledBody(file, size)
        pieces, wanted = [], self._size if size is None or size < 0 else size
        while wanted > 0 and self._index < len(self._chunks):
            chunk = self._chunks[self._index]
            piece = (
                chunk[self._offset : self._offset + wanted]
                if self._offset or wanted < len(chunk)
                else chunk
            )
            pieces.append(piece)
            wanted -= len(piece)
            self._offset += len(piece)
            if self._offset >= len(chunk):
                self._index, self._offset = self._index + 1, 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        self.closed = True
        self._release()
        if self._file is not None:
            self._file.close()

    def __del__(self) -> None:  # a request dropped without close() still gives its share back
        self._release()


def request_bodies_in_memory() -> bool:
    """Daphne's requests keep a body of up to REQUEST_BODY_MEMORY_BYTES in memory as it arrived
    (`BodyBuffer`, all of a process's together up to REQUEST_BODIES_MEMORY_BYTES) instead of
    Twisted's temporary file; a larger one still goes to a file.
    Returns whether the patch is in place."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # not served by daphne
        return False
    if getattr(WebRequest, "_orchard_body_buffer", False):
        return True
    from django.conf import settings

    def gotLength(self, length):
        self.content = BodyBuffer(
            int(settings.REQUEST_BODY_MEMORY_BYTES), int(settings.REQUEST_BODIES_MEMORY_BYTES)
        )

    WebRequest.gotLength = gotLength
    WebRequest._orchard_body_buffer = True
    return True
