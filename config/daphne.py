"""Daphne (Twisted) tuning applied when the ASGI application loads.

Twisted's `Request.requestReceived` parses every multipart POST body into `request.args` with the
`email` package: about ten in-memory copies of an upload that daphne never reads (it hands the raw
body to the ASGI application). Turning that parsing off cut the peak memory of a 45 MiB MNIST upload
from 568 to 129 MiB and its time by 3x (bench `ingest.*`; twisted/twisted#4519). The body itself
is still queued whole by daphne: large files should use the resumable upload sessions.

Autobahn builds the arguments of two debug lines per websocket frame (received, sent) eagerly, also
when debug logging is off, and colours them with `click.style`: ~25 us of every direct-io message
(a third of the forward pass it answers). Without the colours they cost ~8 us.
"""

import logging

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
