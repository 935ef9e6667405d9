"""The one place events leave the process for live subscribers (dashboard pages, agents).

Called only from `transaction.on_commit`, so a rolled-back change publishes nothing. Publishing is
best-effort by design: the event row is already committed, and a subscriber that missed a message
catches up from the log (the consumer fills seq gaps; a client reconnects with its last `seq`) —
so a channel-layer outage is logged, never raised into the request that made the change.

With channels-redis, group sends run on one long-lived event loop per process (a daemon thread):
`async_to_sync` from a plain thread (WSGI, Celery, scripts) makes a new loop per call, and with it
a new Redis connection per commit — about 25 ms each on a busy machine instead of about 1. The
calling thread waits for its send (bounded), so one thread's commits are published in commit order.
The in-memory layer (embedded mode) must stay on the server's own loop, so it keeps `async_to_sync`.

A hung Redis must cost a request milliseconds, not seconds: the wait is bounded by
TETHER_EVENTS_PUBLISH_TIMEOUT_SECONDS, a send that overran it is cancelled (nothing piles up on the
publishing loop), and for PUBLISH_BACKOFF_SECONDS after one the process does not try again — the
subscribers' hubs read those events from the log meanwhile.
"""

import asyncio
import concurrent.futures
import logging
import os
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

# Every committed event goes to this group; consumers filter per subscriber.
EVENTS_GROUP = "tether.events"
PUBLISH_BACKOFF_SECONDS = 1.0

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_skip_until = 0.0  # monotonic time before which publishing is not tried (a send just timed out)


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """This process's publishing loop, started on first use (and again in a forked child)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="tether-event-publisher", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _uses_own_loop(layer) -> bool:
    return type(layer).__module__.startswith("channels_redis")


def publish_events(payloads: list[dict]) -> None:
    if not payloads:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    global _skip_until
    message = {"type": "events.publish", "events": payloads}
    try:
        if _uses_own_loop(layer):
            if time.monotonic() < _skip_until:
                log.info("events %s..%s not published: the channel layer timed out just now",
                         payloads[0]["seq"], payloads[-1]["seq"])
                return
            future = asyncio.run_coroutine_threadsafe(layer.group_send(EVENTS_GROUP, message), _publisher_loop())
            try:
                future.result(timeout=settings.TETHER_EVENTS_PUBLISH_TIMEOUT_SECONDS)
            except concurrent.futures.TimeoutError:
                future.cancel()  # stop the send on the loop too, so that hung sends do not pile up
                _skip_until = time.monotonic() + PUBLISH_BACKOFF_SECONDS
                raise
        else:
            async_to_sync(layer.group_send)(EVENTS_GROUP, message)
    except Exception:  # noqa: BLE001 — see module docstring: subscribers recover from the log
        log.warning("could not publish events %s..%s", payloads[0]["seq"], payloads[-1]["seq"], exc_info=True)
