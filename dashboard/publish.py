"""The one place events leave the process for live subscribers (dashboard pages, agents).

Called only from `transaction.on_commit`, so a rolled-back change publishes nothing. Publishing is
best-effort by design: the event row is already committed, and a subscriber that missed a message
catches up from the log (the consumer fills seq gaps; a client reconnects with its last `seq`) —
so a channel-layer outage is logged, never raised into the request that made the change.

With channels-redis, group sends run on one long-lived event loop per process (a daemon thread):
`async_to_sync` from a plain thread (WSGI, Celery, scripts) makes a new loop per call, and with it
a new Redis connection per commit — about 25 ms each on a busy machine instead of about 1. The
request does not wait for the send (it cost ~12 ms under load, issue 15): each batch is put on a
bounded queue that one sender coroutine on that loop drains in order, so this process's commits are
still sent in commit order. A full queue (Redis stalled) drops the batch with a warning: subscribers
recover it from the log, as from any lost message. The in-memory layer (embedded mode) must stay on
the server's own loop, so it keeps `async_to_sync`.
"""

import asyncio
import atexit
import logging
import os
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Every committed event goes to this group; consumers filter per subscriber.
EVENTS_GROUP = "tether.events"
PUBLISH_TIMEOUT_SECONDS = 2.0

# Batches waiting for the sender; beyond this, a stalled channel layer drops them (see above).
PUBLISH_QUEUE_SIZE = 10_000

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_queue: asyncio.Queue | None = None
_loop_pid: int | None = None


def _publisher() -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
    """This process's publishing loop and queue, started on first use (and again in a forked child)."""
    global _loop, _queue, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            queue = asyncio.Queue(maxsize=PUBLISH_QUEUE_SIZE)
            threading.Thread(target=loop.run_forever, name="tether-event-publisher", daemon=True).start()
            asyncio.run_coroutine_threadsafe(_send_forever(queue), loop)
            if _loop is None:
                # A script or worker that exits right after a change still sends what it queued.
                atexit.register(publish_flush)
            _loop, _queue, _loop_pid = loop, queue, os.getpid()
        return _loop, _queue


async def _send_forever(queue: asyncio.Queue) -> None:
    while True:
        layer, message = await queue.get()
        try:
            await asyncio.wait_for(layer.group_send(EVENTS_GROUP, message), PUBLISH_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 — see module docstring: subscribers recover from the log
            events = message["events"]
            log.warning("could not publish events %s..%s", events[0]["seq"], events[-1]["seq"], exc_info=True)
        finally:
            queue.task_done()


def _enqueue(queue: asyncio.Queue, item) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        events = item[1]["events"]
        log.warning("publish queue full: dropped events %s..%s (subscribers read them from the log)",
                    events[0]["seq"], events[-1]["seq"])


def publish_flush(timeout: float = PUBLISH_TIMEOUT_SECONDS) -> bool:
    """Wait until every batch queued so far has been sent (for scripts and tests that exit or check
    right after a change). True when the queue emptied within `timeout`."""
    if _loop is None or _queue is None or _loop_pid != os.getpid():
        return True
    try:
        asyncio.run_coroutine_threadsafe(_queue.join(), _loop).result(timeout)
        return True
    except TimeoutError:
        return False


def _uses_own_loop(layer) -> bool:
    return type(layer).__module__.startswith("channels_redis")


def publish_events(payloads: list[dict]) -> None:
    if not payloads:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "events.publish", "events": payloads}
    try:
        if _uses_own_loop(layer):
            loop, queue = _publisher()
            loop.call_soon_threadsafe(_enqueue, queue, (layer, message))
        else:
            async_to_sync(layer.group_send)(EVENTS_GROUP, message)
    except Exception:  # noqa: BLE001 — see module docstring: subscribers recover from the log
        log.warning("could not publish events %s..%s", payloads[0]["seq"], payloads[-1]["seq"], exc_info=True)
