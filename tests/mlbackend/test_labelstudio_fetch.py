"""Fetching task data: allowed hosts only, no internal addresses unless allowed, no redirects to
other hosts, size and time limits. No network: a server on 127.0.0.1 and a patched resolver."""

import socket

import pytest

from apps.core import outbound
from apps.core.exceptions import PayloadTooLarge, ValidationFailed
from apps.mlbackend.labelstudio import fetch
from apps.mlbackend.labelstudio.fetch import (
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    check_address,
    fetch_task_value,
    parse_host_entry,
)
from tests.mlbackend.labelstudio_helpers import TaskDataServer, data_uri, stripes_png

PNG = stripes_png(True)


def _resolver(table):
    """A getaddrinfo answering `table[host]` (a list of addresses) without DNS."""

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            raise socket.gaierror(f"unknown host {host}")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in table[host]
        ]

    return getaddrinfo


def test_data_uris_are_decoded_without_any_fetch():
    policy = FetchPolicy()
    assert fetch_task_value(data_uri(PNG), policy) == PNG
    assert fetch_task_value("data:text/plain,hello%20world", policy) == b"hello world"
    with pytest.raises(PayloadTooLarge):
        fetch_task_value(data_uri(PNG), FetchPolicy(max_bytes=10))
    with pytest.raises(ValidationFailed, match="Malformed"):
        fetch_task_value("data:image/png;base64", policy)


def test_label_studio_paths_go_to_its_host_with_the_token_and_nowhere_else():
    with TaskDataServer({"/data/upload/7/a.png": PNG}, require_token="tok") as server:
        policy = FetchPolicy(
            label_studio_url=server.url, access_token="tok", allow_private_networks=True
        )
        assert fetch_task_value("/data/upload/7/a.png", policy) == PNG
        assert fetch_task_value(f"{server.url}/data/upload/7/a.png", policy) == PNG
        path, headers = server.requests[0]
        assert path == "/data/upload/7/a.png"
        assert headers["Authorization"] == "Token tok"
        assert headers["Host"] == f"127.0.0.1:{server.port}"
        with pytest.raises(FetchFailed) as failed:
            fetch_task_value("/data/upload/7/missing.png", policy)
        # The status is for the server's log; the caller learns nothing about the path.
        assert "HTTP 404" in failed.value.detail
        assert failed.value.message == "Could not fetch the task data."
    with pytest.raises(FetchRefused, match="no Label Studio hostname"):
        fetch_task_value("/data/upload/7/a.png", FetchPolicy())


def test_loopback_and_private_addresses_need_the_explicit_allowance():
    with TaskDataServer({"/a.png": PNG}) as server:
        closed = FetchPolicy(label_studio_url=server.url)
        with pytest.raises(FetchRefused, match="private, loopback") as refused:
            fetch_task_value("/a.png", closed)
        assert "127.0.0.1" not in refused.value.message
        assert server.requests == []  # refused before connecting
        open_ = FetchPolicy(label_studio_url=server.url, allow_private_networks=True)
        assert fetch_task_value("/a.png", open_) == PNG


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
    ],
)
def test_internal_addresses_are_refused(address):
    with pytest.raises(FetchRefused):
        check_address(address, allow_private=False)


@pytest.mark.parametrize("address", ["0.0.0.0", "224.0.0.1", "240.0.0.1", "::"])
def test_unusable_addresses_are_refused_even_when_private_ones_are_allowed(address):
    with pytest.raises(FetchRefused):
        check_address(address, allow_private=True)


def test_every_resolved_address_is_checked(monkeypatch):
    # A name that resolves to a public AND a private address (DNS rebinding style) is refused.
    monkeypatch.setattr(
        outbound,
        "_getaddrinfo",
        _resolver(
            {"ls.example.com": ["93.184.216.34", "10.0.0.5"], "evil.example.com": ["10.0.0.5"]}
        ),
    )
    policy = FetchPolicy(
        label_studio_url="http://ls.example.com", allowed_hosts=("evil.example.com",)
    )
    with pytest.raises(FetchRefused, match="private"):
        fetch_task_value("/data/upload/1/a.png", policy)
    with pytest.raises(FetchRefused, match="private"):
        fetch_task_value("http://evil.example.com/a.png", policy)


def test_the_checked_address_is_the_one_connected_to(monkeypatch):
    # ls.example.com resolves (once, checked) to 127.0.0.1: the fetch connects there and sends
    # the real host name.
    with TaskDataServer({"/a.png": PNG}) as server:
        monkeypatch.setattr(outbound, "_getaddrinfo", _resolver({"ls.example.com": ["127.0.0.1"]}))
        policy = FetchPolicy(
            label_studio_url=f"http://ls.example.com:{server.port}", allow_private_networks=True
        )
        assert fetch_task_value("/a.png", policy) == PNG
        assert server.requests[0][1]["Host"] == f"ls.example.com:{server.port}"


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://other.example.com/a.png", "not allowed"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://ls.example.com/", "scheme"),
        ("http://user:pw@ls.example.com/a.png", "credentials"),
        ("//ls.example.com/a.png", "scheme"),
        ("http://ls.example.com:99999/a.png", "not a valid URL"),
    ],
)
def test_hosts_and_schemes_outside_the_policy_are_refused(url, message, monkeypatch):
    monkeypatch.setattr(outbound, "_getaddrinfo", _resolver({}))
    policy = FetchPolicy(label_studio_url="http://ls.example.com")
    with pytest.raises(FetchRefused, match=message):
        fetch_task_value(url, policy)


def test_allowed_hosts_entries():
    assert parse_host_entry("Images.Example.com") == ("images.example.com", None)
    assert parse_host_entry("images.example.com:8443") == ("images.example.com", 8443)
    assert parse_host_entry("[::1]:8080") == ("::1", 8080)
    assert parse_host_entry("fd00::1") == ("fd00::1", None)
    for bad in ["", "a/b", "host:0", "host:x", "[::1", "a@b"]:
        with pytest.raises(ValueError):
            parse_host_entry(bad)
    policy = FetchPolicy(allowed_hosts=("img.example.com", "cdn.example.com:8443"))
    assert policy.allows("https", "img.example.com", 443)
    assert policy.allows("https", "cdn.example.com", 8443)
    assert not policy.allows("https", "cdn.example.com", 443)
    assert not policy.allows("https", "example.com", 443)


def test_redirects_stay_on_allowed_hosts_and_drop_credentials():
    with TaskDataServer(
        {"/b.png": PNG},
        redirects={"/a.png": "/b.png", "/out.png": "http://attacker.example.com/x.png"},
    ) as server:
        policy = FetchPolicy(
            label_studio_url=server.url, access_token="tok", allow_private_networks=True
        )
        assert fetch_task_value("/a.png", policy) == PNG
        with pytest.raises(FetchRefused, match="attacker.example.com"):
            fetch_task_value("/out.png", policy)
        # Another allowed host (same server under the name "localhost") gets no token.
        server.redirects["/elsewhere.png"] = f"http://localhost:{server.port}/b.png"
        policy = FetchPolicy(
            label_studio_url=server.url,
            access_token="tok",
            allowed_hosts=("localhost",),
            allow_private_networks=True,
        )
        server.requests.clear()
        assert fetch_task_value("/elsewhere.png", policy) == PNG
        assert server.requests[0][1].get("Authorization") == "Token tok"
        assert "Authorization" not in server.requests[1][1]


def test_redirect_loops_stop():
    with TaskDataServer(redirects={"/a.png": "/a.png"}) as server:
        policy = FetchPolicy(label_studio_url=server.url, allow_private_networks=True)
        with pytest.raises(FetchFailed) as failed:
            fetch_task_value("/a.png", policy)
        assert "redirects" in failed.value.detail
        assert len(server.requests) == fetch.MAX_REDIRECTS + 1


def test_size_and_time_limits():
    big = b"\0" * 5000
    with TaskDataServer({"/big": big}) as server:
        policy = FetchPolicy(
            label_studio_url=server.url, allow_private_networks=True, max_bytes=4096
        )
        with pytest.raises(PayloadTooLarge):
            fetch_task_value("/big", policy)
    with TaskDataServer({"/slow": PNG}, delay=1.0) as server:
        policy = FetchPolicy(
            label_studio_url=server.url, allow_private_networks=True, timeout_s=0.3
        )
        with pytest.raises(FetchFailed) as failed:
            fetch_task_value("/slow", policy)
        assert "Timed out" in failed.value.detail


def test_unresolvable_host(monkeypatch):
    monkeypatch.setattr(outbound, "_getaddrinfo", _resolver({}))
    with pytest.raises(FetchFailed) as failed:
        fetch_task_value("/a.png", FetchPolicy(label_studio_url="http://nowhere.invalid"))
    assert "Cannot resolve" in failed.value.detail


def test_the_time_limit_is_a_total_deadline_against_a_server_that_drips_bytes():
    """A server that sends one byte every 50 ms never lets a single read time out; the fetch must
    still end at its deadline (it held 30 s against a 10 s limit before)."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    body = b"x" * 40
    sent = []

    def drip():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            try:
                for byte in body:  # 2 s in all, each byte well within any read timeout
                    conn.sendall(bytes([byte]))
                    sent.append(byte)
                    threading.Event().wait(0.05)
            except OSError:
                pass  # the client gave up: what the test wants

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    policy = FetchPolicy(
        label_studio_url=f"http://127.0.0.1:{port}", allow_private_networks=True, timeout_s=0.5
    )
    try:
        with pytest.raises(FetchFailed) as failed:
            fetch_task_value("/drip.png", policy)
        assert "Timed out" in failed.value.detail
        thread.join(timeout=10)
        assert len(sent) < len(body)  # it gave up while the server was still dripping
    finally:
        listener.close()


@pytest.mark.parametrize("upstream", [None, 404, 401])
def test_a_failed_fetch_is_orchards_502_whatever_the_far_server_said(upstream):
    # The far server's status is kept for the server (upstream_status); Label Studio is told 502
    # (a far 404 is not Orchard's 404, and no answer at all must not crash the error mapping).
    from apps.mlbackend.labelstudio.http import status_and_detail

    exc = FetchFailed("detail", status=upstream)
    assert exc.upstream_status == upstream
    assert status_and_detail(exc) == (502, "Could not fetch the task data.")
