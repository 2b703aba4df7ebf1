"""A body Orchard does not want (a compute API's 202) is read before the connection closes, so the
far server sees an orderly close, not a reset of unread data."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.outbound import pinned


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the handler reads the next request line
    errors: list[BaseException] = []
    done = threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"accepted": true, "detail": "' + b"x" * 20000 + b'"}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def handle(self):
        try:
            super().handle()
        except OSError as exc:  # what http.server would print as "Connection reset by peer"
            type(self).errors.append(exc)
        finally:
            type(self).done.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.errors = []
    _Receiver.done = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_unwanted_answer_body_is_read_before_the_close(receiver):
    port = receiver.server_address[1]
    url = f"http://127.0.0.1:{port}/learnuplet"
    for _ in range(5):  # a reset needs the unread bytes to be there when the socket closes
        _Receiver.done = threading.Event()
        status, location, body = pinned(
            "POST", url, headers={"Content-Type": "application/json"}, body=b"{}"
        )
        assert (status, location, body) == (202, None, b"")
        assert _Receiver.done.wait(10)
    assert _Receiver.errors == []


def test_an_unwanted_body_that_drips_is_not_waited_for_past_the_deadline():
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sent: list[int] = []
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2000\r\n\r\n")
            for _ in range(2000):
                if stop.wait(0.02):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                sent.append(1)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/learnuplet"
    try:
        status, _, body = pinned("POST", url, body=b"{}", seconds=1.0)
        assert (status, body) == (202, b"")
        assert len(sent) < 2000  # it gave up while the server was still dripping
    finally:
        stop.set()
        thread.join(5)
        listener.close()
