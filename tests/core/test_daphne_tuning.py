"""Under daphne, Twisted must not parse multipart bodies into memory (daphne never reads them),
autobahn's per-frame debug-log arguments carry no colour codes (click.style on every frame), an
open websocket's frames go to the socket when written (not a reactor pass later), and request
bodies reach the application in 1 MiB messages from memory (not a temporary file) up to a bound."""

import socket
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import tcp

from config.daphne import (
    REQUEST_BODY_MESSAGE_BYTES,
    larger_request_body_messages,
    plain_autobahn_log_arguments,
    skip_twisted_form_parsing,
    write_websocket_frames_at_once,
)


def _channel() -> SimpleNamespace:
    """What daphne's request needs of its HTTP channel to be made."""
    server = SimpleNamespace(protocol_connected=lambda request: None)
    address = SimpleNamespace(host="127.0.0.1", port=1)
    return SimpleNamespace(
        factory=SimpleNamespace(server=server),
        getPeer=lambda: address,
        getHost=lambda: address,
        transport=None,
    )


def test_requests_skip_twisted_form_parsing():
    assert skip_twisted_form_parsing() is True
    assert skip_twisted_form_parsing() is True  # idempotent: patched once
    request = WebRequest(_channel())
    assert request._parsePOSTFormSubmission is False


def test_autobahn_log_arguments_are_plain_text():
    from autobahn.util import hltype

    assert plain_autobahn_log_arguments() is True
    assert hltype(test_autobahn_log_arguments_are_plain_text) == (
        f"<{__name__}.test_autobahn_log_arguments_are_plain_text>"
    )


class _Reactor:
    """Records what a transport asks of the reactor (a buffered write registers a writer)."""

    def __init__(self):
        self.writers = set()

    def addReader(self, reader):
        pass

    def addWriter(self, writer):
        self.writers.add(writer)

    def removeWriter(self, writer):
        self.writers.discard(writer)


@pytest.fixture
def pair():
    """A daphne-side transport (Twisted's server connection) over a real socket pair, and the
    client's end of it."""
    assert write_websocket_frames_at_once() is True
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport = tcp.Server(ours, None, ("127.0.0.1", 1), None, 0, _Reactor())
    transport.connected = 1
    yield transport, theirs
    ours.close()
    theirs.close()


def _received(sock, limit=1 << 22) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(limit)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def _flush(transport, theirs) -> bytes:
    """Run the reactor's part by hand: write what is buffered until nothing is left."""
    got = b""
    while transport.reactor.writers:
        assert not isinstance(transport.doWrite(), BaseException)
        if transport.offset == len(transport.dataBuffer) and not transport._tempDataLen:
            transport.stopWriting()
        got += _received(theirs)
    return got + _received(theirs)


def test_open_websocket_frames_are_sent_when_written(pair):
    transport, theirs = pair
    WebSocketProtocol.onOpen(
        SimpleNamespace(
            transport=transport,
            server=SimpleNamespace(log_action=lambda *args: None),
            request=SimpleNamespace(path="/"),
            client_addr=None,
        )
    )
    transport.write(b"frame one")
    transport.write(b"frame two")
    assert _received(theirs) == b"frame one" + b"frame two"
    assert transport.reactor.writers == set()  # no reactor pass, no epoll registration


def test_http_writes_keep_twisteds_buffered_path(pair):
    transport, theirs = pair  # not upgraded: an HTTP response's writes share one send
    transport.write(b"HTTP/1.1 200 OK\r\n")
    transport.write(b"body")
    assert _received(theirs) == b""
    assert transport.reactor.writers == {transport}
    assert _flush(transport, theirs) == b"HTTP/1.1 200 OK\r\nbody"


def test_what_the_kernel_does_not_take_is_buffered_in_order(pair):
    transport, theirs = pair
    transport._orchard_write_at_once = True
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 8192  # 2 MiB: more than the socket takes at once
    transport.write(big)
    transport.write(b"after")  # behind buffered data: buffered too, never ahead of it
    assert 0 < transport._tempDataLen <= len(big) + 5
    assert transport.reactor.writers == {transport}
    assert _flush(transport, theirs) == big + b"after"


def test_a_write_to_a_broken_socket_is_left_to_twisted(pair):
    transport, theirs = pair
    transport._orchard_write_at_once = True
    transport.socket.shutdown(socket.SHUT_WR)  # send() now fails with EPIPE
    transport.write(b"lost")  # no exception here: buffered; the reactor's doWrite reports it
    assert transport.reactor.writers == {transport}
    assert isinstance(transport.doWrite(), BaseException)


def test_text_is_refused_as_twisted_does(pair):
    transport, _ = pair
    transport._orchard_write_at_once = True
    with pytest.raises(TypeError):
        transport.write("text")


def test_request_bodies_reach_the_application_in_1_mib_messages():
    """Daphne's default 8 KiB made 5,800 ASGI messages of a 47 MiB upload; a server built after
    the patch (daphne's command line builds it after importing the application) uses 1 MiB, and
    a size given explicitly is kept."""
    from daphne.server import Server

    assert larger_request_body_messages() is True
    assert larger_request_body_messages() is True  # idempotent: patched once
    assert REQUEST_BODY_MESSAGE_BYTES == 1 << 20
    endpoints = ["tcp:port=0:interface=127.0.0.1"]  # not listened on: run() is never called
    server = Server(application=None, endpoints=endpoints, signal_handlers=False)
    assert server.request_buffer_size == REQUEST_BODY_MESSAGE_BYTES
    chosen = Server(
        application=None, endpoints=endpoints, signal_handlers=False, request_buffer_size=4096
    )
    assert chosen.request_buffer_size == 4096


def test_request_bodies_stay_in_memory_up_to_the_bound(settings):
    """Twisted wrote a body over 100 kB to a temporary file that daphne read back whole; now the
    received bytes objects are kept (up to REQUEST_BODY_MEMORY_BYTES) and read back without copies
    where a read matches them."""
    from config.daphne import BodyBuffer, request_bodies_in_memory

    assert request_bodies_in_memory() is True
    assert request_bodies_in_memory() is True  # idempotent: patched once
    settings.REQUEST_BODY_MEMORY_BYTES = 1000
    settings.REQUEST_BODIES_MEMORY_BYTES = 3000
    request = WebRequest(_channel())
    request.gotLength(None)  # a body without a Content-Length too
    assert isinstance(request.content, BodyBuffer)
    assert (request.content.limit, request.content.total) == (1000, 3000)

    body = BodyBuffer(limit=1000)
    pieces = [bytes([i]) * 100 for i in range(5)]
    for piece in pieces:
        body.write(piece)
    assert body.tell() == 500
    body.seek(0, 0)
    assert body.read(100) is pieces[0]  # one whole piece: the object itself
    assert body.read(150) == pieces[1] + pieces[2][:50]
    assert body.read() == pieces[2][50:] + pieces[3] + pieces[4]
    assert body.read(10) == b""
    body.seek(0, 0)  # daphne seeks back before it reads
    assert body.read(10_000) == b"".join(pieces)
    with pytest.raises(OSError):
        body.seek(3)
    body.close()
    assert body.closed


def test_a_body_past_the_bound_spills_to_a_file_handed_over_whole():
    """Past the bound the body goes to a temporary file, and daphne's read gets that file (a
    `SpilledBody`, empty as bytes: one last message) instead of every byte read back into the
    application's queue; the file is the application's to close, not the buffer's."""
    from apps.core.asgi import SpilledBody, body_length
    from config.daphne import BodyBuffer

    body = BodyBuffer(limit=250)
    pieces = [bytes([i]) * 100 for i in range(5)]
    for piece in pieces:
        body.write(piece)
    assert body._file is not None and body._chunks == []  # all of it, in order, on disk
    assert body.tell() == 500
    body.seek(0, 0)
    handed = body.read(1 << 20)  # as daphne reads: buffer-sized, until a short read
    assert isinstance(handed, SpilledBody) and len(handed) == 0 and handed.size == 500
    assert body_length({"type": "http.request", "body": handed}) == 500
    assert handed.file.read() == b"".join(pieces)
    assert body.read(1 << 20) == b""  # handed once
    body.close()
    assert body.closed and not handed.file.closed
    handed.file.close()


def test_the_bodies_of_a_process_share_one_memory_budget():
    """Bodies arrive before any check: many slow clients' bodies together stay within `total`;
    past it a body goes to a file, and a closed (or dropped) body gives its share back."""
    from config.daphne import BodyBuffer

    start = BodyBuffer.held
    first, second = (
        BodyBuffer(limit=500, total=start + 800),
        BodyBuffer(limit=500, total=start + 800),
    )
    first.write(b"a" * 500)
    second.write(b"b" * 200)
    assert (first._file, second._file) == (None, None) and BodyBuffer.held == start + 700
    second.write(b"c" * 200)  # 900 in memory would pass the budget: this body goes to a file
    assert second._file is not None and BodyBuffer.held == start + 500
    second.seek(0, 0)
    with second.read().file as spilled:
        assert spilled.read() == b"b" * 200 + b"c" * 200
    second.close()
    first.close()
    assert BodyBuffer.held == start
    third = BodyBuffer(limit=500, total=start + 800)
    third.write(b"d" * 300)
    assert third._file is None and BodyBuffer.held == start + 300
    del third  # never closed: its share comes back when it is dropped
    assert BodyBuffer.held == start
