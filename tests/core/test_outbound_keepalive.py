"""Keep-alive in the outbound policy (`apps.core.outbound.KeepAlive`): a caller fetching several
URLs reuses one connection per origin, never past the address check it was opened under, never
after an answer it did not read to the end, and a GET (never a POST) whose kept connection the
server closed while idle is sent again on a new one."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.core import outbound
from apps.core.exceptions import PayloadTooLarge
from tests.outbound import pinned


class _Server:
    """HTTP/1.1 on loopback: `/small` (10 bytes), `/big` (10,000 bytes) and POST `/learn`
    answer 200; it counts connections and requests. `close_after_answer`: the server closes each
    connection after its answer without saying so (as a server whose keep-alive timeout passed
    while the connection was idle)."""

    def __init__(self, close_after_answer: bool = False):
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with lock:
                    state.connections += 1

            def log_message(self, *args):
                pass

            def _answer(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if close_after_answer:
                    self.close_connection = True

            def do_GET(self):
                with lock:
                    state.requests.append(("GET", self.path))
                self._answer(b"x" * (10_000 if self.path == "/big" else 10))

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    state.requests.append(("POST", self.path))
                self._answer(b"{}")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _get(url, keep_alive, *, allow_private=True, max_bytes=1024):
    return pinned(
        "GET", url, allow_private=allow_private, max_bytes=max_bytes, keep_alive=keep_alive
    )


def test_requests_in_a_row_share_one_connection(server):
    with outbound.KeepAlive() as keep_alive:
        for _ in range(5):
            assert _get(server.url + "/small", keep_alive) == (200, None, b"x" * 10)
    assert server.connections == 1 and len(server.requests) == 5
    # Without a KeepAlive every request has its own connection, as before.
    for _ in range(2):
        _get(server.url + "/small", None)
    assert server.connections == 3


def test_a_kept_connection_never_skips_the_address_check(server):
    with outbound.KeepAlive() as keep_alive:
        _get(server.url + "/small", keep_alive, allow_private=True)
        with pytest.raises(outbound.FetchRefused):
            _get(server.url + "/small", keep_alive, allow_private=False)
    assert len(server.requests) == 1


def test_an_answer_not_read_to_its_end_closes_its_connection(server):
    with outbound.KeepAlive() as keep_alive:
        with pytest.raises(PayloadTooLarge):
            _get(server.url + "/big", keep_alive, max_bytes=1000)
        assert _get(server.url + "/small", keep_alive)[0] == 200
    assert server.connections == 2


def test_a_get_whose_idle_connection_was_closed_is_sent_again():
    server = _Server(close_after_answer=True)
    try:
        with outbound.KeepAlive() as keep_alive:
            for _ in range(4):
                assert _get(server.url + "/small", keep_alive) == (200, None, b"x" * 10)
        assert server.connections == 4 and len(server.requests) == 4
    finally:
        server.close()


def test_a_post_is_never_sent_twice():
    server = _Server(close_after_answer=True)
    url = server.url + "/learn"

    def post(keep_alive):
        return pinned(
            "POST",
            url,
            headers={"Content-Type": "application/json"},
            body=b"{}",
            keep_alive=keep_alive,
        )

    try:
        with outbound.KeepAlive() as keep_alive:
            assert post(keep_alive)[0] == 200
            with pytest.raises(outbound.FetchFailed):
                post(keep_alive)  # the kept connection is gone: failed, not retried
        assert server.requests == [("POST", "/learn")]
    finally:
        server.close()
