"""Under daphne, Twisted must not parse multipart bodies into memory (daphne never reads them), and
autobahn's per-frame debug-log arguments carry no colour codes (click.style on every frame)."""

from types import SimpleNamespace

from daphne.http_protocol import WebRequest

from config.daphne import plain_autobahn_log_arguments, skip_twisted_form_parsing


def test_requests_skip_twisted_form_parsing():
    assert skip_twisted_form_parsing() is True
    assert skip_twisted_form_parsing() is True  # idempotent: patched once
    server = SimpleNamespace(protocol_connected=lambda request: None)
    address = SimpleNamespace(host="127.0.0.1", port=1)
    channel = SimpleNamespace(
        factory=SimpleNamespace(server=server),
        getPeer=lambda: address,
        getHost=lambda: address,
        transport=None,
    )
    request = WebRequest(channel)
    assert request._parsePOSTFormSubmission is False


def test_autobahn_log_arguments_are_plain_text():
    from autobahn.util import hltype

    assert plain_autobahn_log_arguments() is True
    assert hltype(test_autobahn_log_arguments_are_plain_text) == (
        f"<{__name__}.test_autobahn_log_arguments_are_plain_text>"
    )
