"""The one place events leave the process for live subscribers (dashboard pages, agents).

Called only from `transaction.on_commit`, so a rolled-back change publishes nothing. Publishing is
best-effort by design: the event row is already committed, and a subscriber that missed a message
catches up by replaying from its last `seq` — so a channel-layer outage is logged, never raised
into the request that made the change.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Every committed event goes to this group; consumers filter per subscriber.
EVENTS_GROUP = "tether.events"


def publish_events(payloads: list[dict]) -> None:
    if not payloads:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(EVENTS_GROUP, {"type": "events.publish", "events": payloads})
    except Exception:  # noqa: BLE001 — see module docstring: subscribers recover by replay
        log.warning("could not publish events %s..%s", payloads[0]["seq"], payloads[-1]["seq"], exc_info=True)
