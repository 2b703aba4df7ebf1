"""ASGI entry point: HTTP through Django, websockets through Channels (JWT + origin checks)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

from apps.core.asgi import get_asgi_application  # Django's, bodies in memory

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.accounts.ws import JWTAuthMiddleware, OriginCheckMiddleware  # noqa: E402
from apps.core.events import RememberLoopMiddleware  # noqa: E402
from apps.core.middleware import BodySizeLimitASGIMiddleware  # noqa: E402
from config.daphne import (  # noqa: E402
    answer_oversized_request_heads,
    larger_request_body_messages,
    plain_autobahn_log_arguments,
    request_bodies_in_memory,
    skip_twisted_form_parsing,
    write_websocket_frames_at_once,
)
from config.routing import websocket_urlpatterns  # noqa: E402

skip_twisted_form_parsing()
plain_autobahn_log_arguments()
write_websocket_frames_at_once()
larger_request_body_messages()
request_bodies_in_memory()
answer_oversized_request_heads()

# glibc keeps freed blocks up to 32 MiB in its heap (MALLOC_TUNING, ml.memory), as in the workers:
# the server copies request bodies and runs direct-io models, and each 8 MiB upload chunk's
# buffers were fresh mappings, page-faulted anew (a chunk PUT 55 -> 35 ms).
from apps.tasks.threads import configure_malloc  # noqa: E402

configure_malloc()

# Heavy imports at server start, never inside a request: the first `host/all` of a fresh team-mode
# daphne imported torch inside the request (16 s; 78 s under load).
import ml.devices  # noqa: E402, F401 - imports torch

application = RememberLoopMiddleware(
    ProtocolTypeRouter(
        {
            "http": BodySizeLimitASGIMiddleware(django_asgi_app),
            "websocket": OriginCheckMiddleware(JWTAuthMiddleware(URLRouter(websocket_urlpatterns))),
        }
    )
)

# Clusters already in DIRECT mode load their model now, in the background, not inside the first
# direct-io handshake (daphne gives a handshake 5 s).
from apps.clusters.directio import warm_in_background  # noqa: E402

warm_in_background()

if settings.INPROCESS_WORKER:
    from apps.tasks.embedded import start_inprocess_worker

    start_inprocess_worker()
