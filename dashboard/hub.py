"""One channel-layer subscription per process, shared by every event-stream subscriber in it, which
hands them the live events gap-free and in seq order.

Why one per process: with a channel per WebSocket, each committed transaction costs one Redis
message per subscriber (channels-redis copies a group message to every member channel, and each copy
is popped, decoded and dispatched on its own) — with 50 subscribers and 200 changes a second, 10,000
messages a second through Redis and the web process. The hub joins the group `tether.events` once per
process (per event loop) and passes each message to its local subscribers in memory.

Why it orders: transactions commit in seq order (assignments/events.py) but their live messages can
arrive out of order (several web instances and workers publish concurrently) or not at all
(channels-redis drops messages to a full channel). The hub keeps `horizon`, the last seq it has
handed on; an event above horizon + 1 waits up to TETHER_EVENTS_REORDER_WAIT_SECONDS for the
missing ones, then the gap is read from the log — once per process, not once per subscriber. Since
an event's live message is sent only after its COMMIT, and events become visible in seq order,
everything below it is readable by then (a missing seq that is not in the log was rolled back: a
hole). When no message comes for TETHER_EVENTS_POLL_SECONDS, the hub checks the end of the log, in
case the last message was the one lost.

A subscriber is registered once the hub is a group member and has read its starting point, so
"subscribe before reading the log" (dashboard/consumers.py) holds: everything committed after the
subscriber reads the end of the log reaches it. If the channel layer fails, the hub retries with a
growing pause; subscribers lose nothing, the log fills what was missed.

Membership is renewed on a timer (TETHER_EVENTS_GROUP_RENEW_SECONDS), not only when a message
arrives: a restarted Redis forgets every group, after which no message would ever arrive to prompt
a renewal and live delivery would fall back to the poll for the life of the process.
"""

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable

from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.db.models import Max

from assignments.events import event_payload
from assignments.models import Event
from dashboard.publish import EVENTS_GROUP, is_channels_redis

log = logging.getLogger(__name__)

_TEXT_CACHE = 20_000  # serialised payloads kept so that N subscribers do not serialise one event N times
_READ_AT_ONCE = 100  # messages taken off the hub's channel in one round trip after a blocking pop
_READ_PAGE = 1000  # events read from the log at once

# Called with a batch of events and the seqs it spans, (since, upto]: every event in that range is in
# the batch or was never committed (a hole). Successive calls span the log without a gap.
Listener = Callable[[list[dict], int, int], None]


def db_read(fn):
    """Reads for the stream run in the shared thread pool: with the default (thread_sensitive) they
    would queue behind every synchronous view of the process, and the stream behind them."""
    return database_sync_to_async(fn, thread_sensitive=False)


def log_end() -> int:
    return Event.objects.aggregate(end=Max("seq"))["end"] or 0


def _read_range(after: int, upto: int | None) -> tuple[list[dict], int]:
    """Every event in (after, upto] (upto None: the end of the log now), and the seq read up to."""
    if upto is None:
        upto = log_end()  # read first: everything at or below it is already visible
    if upto <= after:
        return [], after
    events = list(Event.objects.filter(seq__gt=after, seq__lte=upto).order_by("seq")[:_READ_PAGE])
    if len(events) == _READ_PAGE:
        upto = events[-1].seq  # far behind: one page now, the next once this one is handed on
    return [event_payload(e) for e in events], upto


class EventHub:
    def __init__(self, layer):
        self.layer = layer
        self.listeners: set[Listener] = set()
        self.channel: str | None = None
        self.tasks: list[asyncio.Task] = []
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.horizon = 0
        self.pending: dict[int, dict] = {}
        self.texts: OrderedDict[int, str] = OrderedDict()
        self._joining = asyncio.Lock()

    # --- subscribers -------------------------------------------------------------------------

    async def subscribe(self, listener: Listener) -> None:
        """Returns once every event committed from now on will reach `listener` (called in the
        event loop with a list of payloads, gap-free and in seq order across calls)."""
        async with self._joining:
            if not self.tasks:
                self.channel = await self.layer.new_channel()
                await self.layer.group_add(EVENTS_GROUP, self.channel)
                self.horizon = await db_read(log_end)()
                self.pending.clear()
                self.inbox = asyncio.Queue()
                self.tasks = [
                    asyncio.create_task(self._receive(), name="tether-event-hub-receive"),
                    asyncio.create_task(self._order(), name="tether-event-hub-order"),
                    asyncio.create_task(self._renew(), name="tether-event-hub-renew"),
                ]
            self.listeners.add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        if not self.listeners:
            asyncio.get_running_loop().create_task(self._leave_if_unused())

    def text(self, payload: dict) -> str:
        """The payload as the JSON text subscribers are sent (serialised once per process)."""
        text = self.texts.get(payload["seq"])
        if text is None:
            text = json.dumps(payload)
        return text

    async def _leave_if_unused(self) -> None:
        """The last subscriber left: stop being a group member (a dead member costs every publish)."""
        async with self._joining:
            if self.listeners or not self.tasks:
                return
            tasks, self.tasks = self.tasks, []
            for task in tasks:
                task.cancel()
            try:
                await self.layer.group_discard(EVENTS_GROUP, self.channel)
            except Exception:  # noqa: BLE001 — it expires from the group anyway
                log.warning("event hub: could not leave the group", exc_info=True)

    # --- the two tasks -----------------------------------------------------------------------

    async def _receive(self) -> None:
        """Moves messages from the channel layer to the inbox (a receive is never cancelled midway
        by a timeout, so no message is dropped by the hub itself)."""
        pause = 0.1
        while True:
            try:
                messages = await self._read()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 — keep listening; the log fills what was missed
                log.warning("event hub: channel layer receive failed, retrying in %.1f s", pause, exc_info=True)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.1
            for message in messages:
                if message.get("type") == "events.publish":
                    self.inbox.put_nowait(message["events"])

    async def _read(self) -> list[dict]:
        """The next messages sent to the hub's channel (none when a wait timed out).

        With channels-redis the hub reads its channel's sorted set itself — a blocking pop, then
        whatever else is waiting, in one more round trip — the keys and serialized messages being
        channels-redis's own (the publisher writes them, `dashboard/publish.py`). channels-redis's
        `receive` cost four round trips a message (a cleanup script, the pop, a backup copy and its
        removal) and several asyncio tasks: in `make bench`'s contention phases the hub's receive was
        ~19% of each worker's CPU. The backup copy guards a receiver cancelled between the pop and
        the hand-off; the hub is cancelled only when it stops listening, and anything lost is read
        from the log (see the module docstring)."""
        layer = self.layer
        if not is_channels_redis(layer):
            return [await layer.receive(self.channel)]
        channel = layer.non_local_name(self.channel)  # this layer instance's process-local channels
        key = layer.prefix + channel
        connection = layer.connection(layer.consistent_hash(channel))
        popped = await connection.bzpopmin(key, timeout=layer.brpop_timeout)
        if popped is None:
            return []
        raw = [popped[1], *(member for member, _ in await connection.zpopmin(key, _READ_AT_ONCE))]
        messages = [layer.deserialize(content) for content in raw]
        for message in messages:
            message.pop("__asgi_channel__", None)
        return messages

    async def _renew(self) -> None:
        """Re-join the group every TETHER_EVENTS_GROUP_RENEW_SECONDS (one ZADD): after a Redis
        restart the hub is a member again within that, and channels-redis's `group_expiry` never
        drops a live hub. Each attempt is bounded by the same period, so a hung Redis delays the
        next one, never stops them."""
        every = settings.TETHER_EVENTS_GROUP_RENEW_SECONDS
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.wait_for(self.layer.group_add(EVENTS_GROUP, self.channel), timeout=every)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 — TimeoutError included: the next period tries again
                log.warning("event hub: could not renew its group membership", exc_info=True)

    async def _order(self) -> None:
        loop = asyncio.get_running_loop()
        gap_since = None
        while True:
            try:
                wait = settings.TETHER_EVENTS_REORDER_WAIT_SECONDS if self.pending else settings.TETHER_EVENTS_POLL_SECONDS
                try:
                    payloads = await asyncio.wait_for(self.inbox.get(), timeout=wait)
                except asyncio.TimeoutError:
                    payloads = None
                if payloads is None and not self.pending:
                    await self._fill(None)  # quiet: was the last message lost?
                    continue
                for payload in payloads or ():
                    if payload["seq"] > self.horizon:
                        self.pending[payload["seq"]] = payload
                while not self.inbox.empty():  # take what else has arrived before deciding
                    for payload in self.inbox.get_nowait():
                        if payload["seq"] > self.horizon:
                            self.pending[payload["seq"]] = payload
                self._hand_on_ready()
                if not self.pending:
                    gap_since = None
                    continue
                gap_since = gap_since or loop.time()
                if loop.time() - gap_since >= settings.TETHER_EVENTS_REORDER_WAIT_SECONDS:
                    # Every event up to the highest one in hand is committed, hence readable: one
                    # read closes every gap below it.
                    await self._fill(max(self.pending))
                    gap_since = None
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 — a database blip: try again; subscribers just wait
                log.warning("event hub: could not read the log", exc_info=True)
                await asyncio.sleep(0.5)

    def _hand_on_ready(self) -> None:
        batch, since = [], self.horizon
        while self.horizon + 1 in self.pending:
            self.horizon += 1
            batch.append(self.pending.pop(self.horizon))
        for seq in [s for s in self.pending if s <= self.horizon]:
            del self.pending[seq]
        if batch:
            self._hand_on(batch, since)

    async def _fill(self, upto: int | None) -> None:
        payloads, read_to = await db_read(_read_range)(self.horizon, upto)
        for payload in payloads:
            self.pending.setdefault(payload["seq"], payload)
        # Everything up to read_to that exists is now in hand: a seq still missing is a hole.
        batch = [self.pending.pop(s) for s in sorted(s for s in self.pending if s <= read_to)]
        since, self.horizon = self.horizon, max(self.horizon, read_to)
        if batch:
            self._hand_on(batch, since)
        self._hand_on_ready()

    def _hand_on(self, batch: list[dict], since: int) -> None:
        """To every subscriber: `batch`, which holds every event in (since, self.horizon]."""
        for payload in batch:
            self.texts[payload["seq"]] = json.dumps(payload)
        while len(self.texts) > _TEXT_CACHE:
            self.texts.popitem(last=False)
        for listener in list(self.listeners):
            try:
                listener(batch, since, self.horizon)
            except Exception:  # noqa: BLE001 — one broken subscriber must not starve the others
                log.exception("event hub: a subscriber failed")


_hubs: dict[asyncio.AbstractEventLoop, EventHub] = {}


def event_hub() -> EventHub:
    """This event loop's hub (one per loop: a server has one; each test has its own)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [old for old in _hubs if old.is_closed()]:
            del _hubs[old]
        hub = _hubs[loop] = EventHub(_layer_for_this_loop())
    return hub


def _layer_for_this_loop():
    """channels-redis keeps its receive state (locks, buffers) per layer instance, bound to the loop
    that first received: a hub gets an instance of its own. The in-memory layer (embedded mode) is
    one process-wide object by nature, so that one is shared."""
    layer = get_channel_layer()
    if is_channels_redis(layer):
        return channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    return layer
