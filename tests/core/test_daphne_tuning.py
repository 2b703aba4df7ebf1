"""Under daphne, Twisted must not parse multipart bodies into memory (daphne never reads them)."""

from types import SimpleNamespace

from daphne.http_protocol import WebRequest

from config.daphne import skip_twisted_form_parsing


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
