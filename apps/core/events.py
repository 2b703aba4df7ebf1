"""Event publishing to the channel layer: one group per task (or run), relayed by websockets/SSE.

Publishing never fails the caller: a broken channel layer loses a live update, not the work (the
database row stays the truth and clients can replay stored metrics).
"""

import logging
import re

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)
_GROUP_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def group_name(kind: str, ident: object) -> str:
    """A channel-layer group name (only ASCII letters, digits, hyphens, underscores, periods)."""
    return _GROUP_SAFE.sub("_", f"{kind}.{ident}")[:99]


def publish(group: str, event: dict) -> None:
    """Send `event` to every consumer of `group` (type 'orchard.event')."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "orchard.event", "event": event})
    except Exception:
        logger.warning("could not publish to %s", group, exc_info=True)
