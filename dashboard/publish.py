"""The one place events leave the process for live subscribers (dashboard pages, agents).

Called only from `transaction.on_commit`, so a rolled-back change publishes nothing. Publishing is
best-effort by design: the event row is already committed, and a subscriber that missed a message
catches up from the log (the consumer fills seq gaps; a client reconnects with its last `seq`) —
so a channel-layer outage is logged, never raised into the request that made the change.

With channels-redis, the request does not wait for the send (it cost ~12 ms under load, issue 15):
each batch is put on a bounded queue that one sender thread per process drains in order, so this
process's commits are still sent in commit order; what queued up during a send goes out as one
message. A full queue (Redis stalled) drops the batch with a warning: subscribers recover it from
the log, as from any lost message.

The sender writes channels-redis's own group send (same keys, same serialized messages, same
capacity and expiry rules; channels-redis 4.3) with a plain Redis client and two Lua scripts: the
group's live members in one round trip, then, when there are any, every member's message in one
more. channels-redis's `group_send` on an asyncio loop in a thread of its own cost a take or a
release ~1.6 ms of the process's CPU (four round trips each with an event-loop wake-up and a
thread hand-off, even with no member); this costs ~0.3 (issue 15, measured in process). Sharded
layers (several Redis hosts) go through channels-redis itself. The in-memory layer (embedded mode)
must stay on the server's own loop, so it keeps `async_to_sync`.
"""

import atexit
import logging
import os
import queue
import threading
import time

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Every committed event goes to this group; consumers filter per subscriber.
EVENTS_GROUP = "tether.events"
PUBLISH_TIMEOUT_SECONDS = 2.0

# Batches waiting for the sender; beyond this, a stalled channel layer drops them (see above).
PUBLISH_QUEUE_SIZE = 10_000

# channels-redis's group_send, as scripts. Members: drop those past the group expiry, list the rest.
_MEMBERS_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# Deliver: for each member's channel key, drop its expired messages, then add this one unless the
# channel is at capacity. ARGV: the messages, the capacities, then now, expiry, now - expiry.
_DELIVER_LUA = """
local n = #KEYS
local now = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
local expired = ARGV[2 * n + 3]
local over_capacity = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, expired)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + n]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


# Batches the sender takes off its queue and sends as one message at most (see `_Sender._run`).
SEND_AT_ONCE = 200


def _merged(items: list[tuple]) -> list[tuple]:
    """Consecutive (layer, message) items for one layer as one message: their events, in order."""
    merged: list[tuple] = []
    for layer, message in items:
        if merged and merged[-1][0] is layer:
            merged[-1][1]["events"].extend(message["events"])
        else:
            merged.append((layer, {"type": message["type"], "events": list(message["events"])}))
    return merged


class _Sender:
    """One per process: a daemon thread draining a bounded queue of (layer, message), in order.

    What has queued up while it sent goes out as one message (the batches' events in queue order):
    one send's round trips, not one's per batch. Measured (issue 12's contention phases): with a
    send per batch, a burst of commits queued behind each other's two round trips, each waiting for
    the GIL among the worker's request threads; the last batch of a burst reached the hubs tens of
    ms after its COMMIT, and every later event, whoever committed it, waited in the hubs for it
    (seq order) — 10% of live events waited 32 ms or more, 1% 70 ms."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=PUBLISH_QUEUE_SIZE)
        self.pid = os.getpid()
        self.clients: dict[int, tuple] = {}
        threading.Thread(target=self._run, name="tether-event-publisher", daemon=True).start()

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < SEND_AT_ONCE:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                for layer, message in _merged(items):
                    try:
                        self.send(layer, message)
                    except Exception:  # noqa: BLE001 — see module docstring: subscribers recover from the log
                        events = message["events"]
                        log.warning("could not publish events %s..%s", events[0]["seq"], events[-1]["seq"],
                                    exc_info=True)
            finally:
                for _ in items:
                    self.queue.task_done()

    def _scripts(self, layer):
        """(members, deliver) scripts bound to a client of the layer's one host, or None when the
        layer is sharded over several."""
        if layer.ring_size != 1:
            return None
        found = self.clients.get(id(layer))
        if found is None or found[0] is not layer:
            # The host as channels-redis holds it (an address URL, or host and port, and options),
            # with the publisher's own timeouts.
            options = dict(layer.hosts[0])
            address = options.pop("address", None)
            options.update(socket_timeout=PUBLISH_TIMEOUT_SECONDS, socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS)
            client = redis.Redis.from_url(address, **options) if address else redis.Redis(**options)
            found = self.clients[id(layer)] = (layer, client.register_script(_MEMBERS_LUA),
                                               client.register_script(_DELIVER_LUA))
        return found[1], found[2]

    def send(self, layer, message) -> None:
        scripts = self._scripts(layer)
        if scripts is None:
            async_to_sync(layer.group_send)(EVENTS_GROUP, message)
            return
        members_script, deliver_script = scripts
        now = time.time()
        members = members_script(keys=[layer._group_key(EVENTS_GROUP)], args=[int(now) - layer.group_expiry])
        if not members:
            return
        names = [member.decode("utf8") for member in members]
        by_connection, message_of, capacity_of = layer._map_channel_keys_to_connection(names, message)
        keys = by_connection[0]
        args = [message_of[k] for k in keys] + [capacity_of[k] for k in keys]
        over = deliver_script(keys=keys, args=[*args, now, int(layer.expiry), int(now) - int(layer.expiry)])
        if over:
            log.info("%s of %s channels over capacity in group %s", over, len(names), EVENTS_GROUP)


_sender_lock = threading.Lock()
_sender: _Sender | None = None


def _publisher() -> _Sender:
    """This process's sender, started on first use (and again in a forked child)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():
            if _sender is None:
                # A script or worker that exits right after a change still sends what it queued.
                atexit.register(publish_flush)
            _sender = _Sender()
        return _sender


def publish_flush(timeout: float = PUBLISH_TIMEOUT_SECONDS) -> bool:
    """Wait until every batch queued so far has been sent (for scripts and tests that exit or check
    right after a change). True when the queue emptied within `timeout`."""
    sender = _sender
    if sender is None or sender.pid != os.getpid():
        return True
    deadline = time.monotonic() + timeout
    with sender.queue.all_tasks_done:
        while sender.queue.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sender.queue.all_tasks_done.wait(remaining)
    return True


def is_channels_redis(layer) -> bool:
    """channels-redis's layer (its keys are written and read here and by the hub directly), not the
    in-memory one of embedded mode, which must stay on the server's own loop."""
    return type(layer).__module__.startswith("channels_redis")


def publish_events(payloads: list[dict]) -> None:
    if not payloads:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "events.publish", "events": payloads}
    try:
        if is_channels_redis(layer):
            try:
                _publisher().queue.put_nowait((layer, message))
            except queue.Full:
                log.warning("publish queue full: dropped events %s..%s (subscribers read them from the log)",
                            payloads[0]["seq"], payloads[-1]["seq"])
        else:
            async_to_sync(layer.group_send)(EVENTS_GROUP, message)
    except Exception:  # noqa: BLE001 — see module docstring: subscribers recover from the log
        log.warning("could not publish events %s..%s", payloads[0]["seq"], payloads[-1]["seq"], exc_info=True)
