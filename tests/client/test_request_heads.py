"""Request heads past Twisted's limits, through the live daphne (`make run`'s server): a header
line over 16 KiB closed the connection with no answer at all, and headers over 16 KiB in all got
a bare 400 without a body. Each now gets a status that says why and a body in the format of the
surface that owns the path (the main API's envelope, Label Studio's, Hanami's)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse


def _exchange(server, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request head; (status, headers, body) of the answer, read to the close."""
    url = urlparse(server.base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received, "no answer: the connection was closed without one"
    top, _, body = received.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return int(lines[0].split()[1]), headers, body


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def test_a_header_line_over_16_kib_is_431_in_the_surfaces_format(server):
    huge = "Authorization: Basic " + "A" * 20_000
    status, headers, body = _exchange(server, _get("/api/auth/me", huge))
    assert status == 431 and headers["Content-Type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] and "longer than 16384 bytes" in error["message"]
    status, _, body = _exchange(server, _get("/ml/mlb-000000000000/health", huge))
    assert status == 431 and json.loads(body)["status"] == 431
    # The Hanami SDK knows 400, not 431.
    status, _, body = _exchange(
        server, _get("/control/v1/dataset/all", "X-Auth-Token: " + "t" * 20_000)
    )
    assert status == 400 and "longer than 16384 bytes" in json.loads(body)["error"]


def test_headers_over_16_kib_in_all_are_431(server):
    many = [f"X-Filler-{i}: " + "f" * 1000 for i in range(20)]
    status, _, body = _exchange(server, _get("/api/system/health", *many))
    assert status == 431 and "larger than 16384 bytes" in json.loads(body)["error"]["message"]


def test_a_request_line_over_16_kib_is_414(server):
    status, _, body = _exchange(server, _get("/api/projects?q=" + "q" * 20_000))
    assert status == 414 and "request line" in json.loads(body)["error"]


def test_the_server_still_serves_after_them(server):
    status, _, _ = _exchange(server, _get("/api/system/health", "Connection: close"))
    assert status == 200
