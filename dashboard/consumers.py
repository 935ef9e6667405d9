"""The live event stream: ws://HOST/assignments/events (DESIGN.md, "Events and the WebSocket").

Query: `since=N` (replay every stored event with seq > N first), `types` (comma list; `assignment.`
or `assignment.*` is a prefix), `pool`, `agent_id`, `profile_id`. Credentials: the session cookie
or an API token (`?token=`, `Authorization: Token …`; see dashboard/auth.py). An agent's token sees
its own pool's events only. Each message is exactly `assignments.events.event_payload(event)`.

How a subscriber gets every event exactly once, in seq order (invariant 4):
- It subscribes to the group `tether.events` (through its process's EventHub, dashboard/hub.py: one
  group member per process, not per socket) BEFORE reading the log, so nothing committed after the
  read can be missed; live messages that arrive meanwhile wait in its buffer.
- `horizon` is the seq up to which every matching event has been sent. A live event with
  seq <= horizon is a duplicate (already replayed) and is dropped.
- Live events come from the hub gap-free and in seq order: it waits briefly for overtaken
  messages and reads lost ones from the log, once per process (see dashboard/hub.py). Should a live
  event still be above horizon + 1 (the seam between this subscriber's start and the hub's), the
  gap is read from the log before it is sent: events become visible in seq order
  (assignments/events.py), so everything below a committed event is readable.
- The buffer is bounded (TETHER_EVENTS_CLIENT_BUFFER events). When a subscriber that is streaming
  live cannot keep up and its buffer overflows, it is sent `{"type": "resync", "since": horizon}`
  and closed with code 4429; it reconnects with that `since` and loses nothing. (While it is still
  replaying, an overflowing buffer is simply emptied: the replay reads the log up to its end anyway
  and the gap check refills the rest.) Each subscriber has its own buffer and task, so a slow one
  delays nobody else.

Close codes: 4400 bad query, 4401 no or invalid credential, 4403 not allowed, 4404 no such stream
(an unknown path), 4429 too slow (resync), 4500 the server failed (its database connection was
killed mid-replay, say): reconnect with the `since` of the error message, which is where the stream
stopped. Every close code is one both daphne and uvicorn send (daphne's WebSocket library refuses
1011 and the socket then stayed open and silent, so the client never reconnected). A refused socket
is accepted first: a close code only reaches a client over an accepted socket. An accepted
subscriber without `since` gets every event committed after its handshake completed.
"""

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from assignments.events import event_payload
from assignments.selectors import event_list, event_matches
from dashboard.hub import db_read, event_hub, log_end

log = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_RESYNC = 4429
CLOSE_SERVER_ERROR = 4500

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.([a-z0-9_]+|\*)?)?$")
_MAX_TYPES = 50


class BadQuery(ValueError):
    pass


@dataclass
class StreamQuery:
    since: int | None = None
    types: list[str] = field(default_factory=list)
    pool: str | None = None
    agent_id: str | None = None
    profile_id: str | None = None

    def filters(self) -> dict:
        return {"types": self.types or None, "pool": self.pool, "agent_id": self.agent_id, "profile_id": self.profile_id}


def parse_stream_query(query_string: bytes) -> StreamQuery:
    try:
        raw = parse_qs(query_string.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise BadQuery("the query string is not UTF-8") from None
    query = StreamQuery()
    since = raw.get("since", [""])[-1].strip()
    if since:
        if not since.isdigit() or len(since) > 19:
            raise BadQuery("since must be a non-negative integer (an event seq)")
        query.since = int(since)
    types = [t.strip() for item in raw.get("types", []) for t in item.split(",") if t.strip()]
    if len(types) > _MAX_TYPES:
        raise BadQuery(f"at most {_MAX_TYPES} types")
    for t in types:
        if len(t) > 64 or not _TYPE_RE.match(t):
            raise BadQuery(f"types: {t[:64]!r} is not an event type or a prefix such as 'assignment.'")
    query.types = types
    for name in ("pool", "agent_id", "profile_id"):
        value = raw.get(name, [""])[-1].strip()
        if len(value) > 128:
            raise BadQuery(f"{name} is longer than 128 characters")
        if not value.isprintable():
            raise BadQuery(f"{name} contains control characters (a NUL, say)")
        setattr(query, name, value or None)
    return query


def _read_page(after: int, upto: int | None, filters: dict, page: int) -> tuple[list[dict], int, bool]:
    """Matching events in (after, upto] — upto None: the end of the log as it is now — at most `page`.
    Returns (payloads, the seq up to which they are complete, whether that reached `upto`)."""
    if upto is None:
        # Read the end first: everything at or below it is already visible (events are visible in
        # seq order), so the page below is complete up to it.
        upto = log_end()
    if upto <= after:
        return [], after, True
    events = event_list(since=after, limit=page, **filters)
    payloads = [event_payload(e) for e in events if e.seq <= upto]
    if len(events) < page or len(payloads) < len(events):
        return payloads, upto, True
    return payloads, payloads[-1]["seq"], False


class EventStreamConsumer(AsyncWebsocketConsumer):
    # No channel of its own: live messages come through the process's EventHub (dashboard/hub.py).
    channel_layer_alias = "tether-event-stream-uses-the-hub"
    pump: asyncio.Task | None = None
    subscribed = False
    closing = False
    parked = False  # the sending task waits for a wake-up (`_run`)

    horizon = 0
    horizon_known = False  # whether `horizon` says where this client's stream stands yet
    accepted = False

    async def accept(self, subprotocol=None, headers=None):
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def __call__(self, scope, receive, send):
        """A failure outside the handlers (the channel layer's receive, say) ends this consumer: close
        the socket with 4500 so that the client reconnects with its last seq instead of waiting on
        a socket nobody writes to any more. (A failure before the consumer starts — the credential
        lookup, say — is closed the same way by `close_on_error`, dashboard/routing.py.)"""
        try:
            return await super().__call__(scope, receive, send)
        except Exception:
            log.exception("event stream consumer failed")
            await self._fail()

    async def _fail(self) -> None:
        """The one close path of every stream failure: stop, tell the client where the stream
        stopped, close with 4500 (a code every server library sends, so the client reconnects)."""
        self.closing = True
        await self._stop_pump()
        await self._leave_group()
        if not self.accepted:  # failed in connect(): a close code reaches only an accepted socket
            with contextlib.suppress(Exception):
                await self.accept()
        # Where to resume: the client's own `since` if the stream failed before it began; none
        # (reconnect from now) if it asked for nothing and nothing was read for it yet.
        message = {"type": "error", "since": self.horizon if self.horizon_known else None,
                   "error": {"code": "server_error", "message": "the stream failed; reconnect with since"}}
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send(text_data=json.dumps(message)), timeout=1.0)
        with contextlib.suppress(Exception):
            await self.close(code=CLOSE_SERVER_ERROR)

    async def connect(self):
        who = self.scope.get("principal")
        user = self.scope.get("user")
        if self.scope.get("token_given"):
            if who is None:
                return await self._refuse(CLOSE_NOT_AUTHENTICATED, "not_authenticated", "the API token is not valid")
        elif user is None or not user.is_authenticated or not user.is_active:
            return await self._refuse(CLOSE_NOT_AUTHENTICATED, "not_authenticated", "log in or give an API token")
        try:
            query = parse_stream_query(self.scope.get("query_string", b""))
        except BadQuery as exc:
            return await self._refuse(CLOSE_BAD_REQUEST, "validation_error", str(exc))
        if who is not None and who.kind == "agent":
            own_pool = who.agent.pool.name
            if query.pool and query.pool != own_pool:
                return await self._refuse(
                    CLOSE_FORBIDDEN, "forbidden", f"agent {who.agent.agent_id} may only watch pool {own_pool}"
                )
            query.pool = own_pool
        self.query = query
        if query.since is not None:
            self.horizon, self.horizon_known = query.since, True
        self.filters = query.filters()
        self.buffer: deque[dict] = deque()
        self.buffer_limit = settings.TETHER_EVENTS_CLIENT_BUFFER
        self.wakeup = asyncio.Event()
        self.replaying = True
        # Join the group before reading the log: see the module docstring.
        self.hub = event_hub()
        await self.hub.subscribe(self._on_events)
        self.subscribed = True
        if query.since is None:
            # "From now": fixed before the handshake completes, so a change the client makes once
            # connected is always streamed to it.
            self.horizon = await db_read(log_end)()
            self.horizon_known = True
        await self.accept()
        self.pump = asyncio.create_task(self._run(query.since))

    async def _refuse(self, code: int, error: str, message: str) -> None:
        self.closing = True
        await self.accept()
        await self.send(text_data=json.dumps({"type": "error", "error": {"code": error, "message": message}}))
        await self.close(code=code)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # the stream is one-way; what a client sends is ignored

    async def disconnect(self, code):
        self.closing = True
        await self._stop_pump()
        await self._leave_group()

    # --- live messages ---------------------------------------------------------------------------

    def _on_events(self, payloads: list[dict], since: int, upto: int) -> None:
        """Committed events, from `dashboard.publish` through the hub (every event, unfiltered):
        all there are in (since, upto]. Called in the event loop: it must not wait for anything."""
        if self.closing or not self.subscribed:
            return
        if self.parked and not self.buffer and self._passed_by(payloads, since, upto):
            return
        self.buffer.extend(payloads)
        if len(self.buffer) > self.buffer_limit:
            if self.replaying:
                self.buffer.clear()  # the replay and the gap check read these from the log
            else:
                self.closing = True
                self.resync_task = asyncio.create_task(self._resync())
                return
        self._wake()

    def _passed_by(self, payloads: list[dict], since: int, upto: int) -> bool:
        """Whether none of these events is for this subscriber and it has had everything up to where
        they start (`since`) — then its horizon moves to `upto` here and its sending task is not
        woken. Called only while that task waits with nothing buffered, so this is exactly what it
        would have done (for a hole below `upto`, after reading the log).

        Why: the hub hands every event to every subscriber in the process, and an agent's stream
        (`?agent_id=`) wants few of them. Waking each subscriber's task for each batch was, in the
        contention phases of `make bench` (32 agents' streams), some 15 task steps a batch in each
        worker — CPU on the event loop, and a wait for the one subscriber the batch was for, which
        might be woken last."""
        if self.horizon < since:
            return False  # it lacks events before these (its seam with the log): its task reads them
        if any(p["seq"] > self.horizon and event_matches(p, **self.filters) for p in payloads):
            return False
        self.horizon = max(self.horizon, upto)
        return True

    def _wake(self) -> None:
        self.wakeup.set()

    async def _resync(self) -> None:
        """Too slow: tell the client where to resume and close it (without waiting for it long)."""
        self.closing = True
        await self._stop_pump()
        self.buffer.clear()
        await self._leave_group()
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(
                self.send(text_data=json.dumps({"type": "resync", "since": self.horizon,
                                                "reason": "the client did not keep up with the stream"})),
                timeout=1.0,
            )
        with contextlib.suppress(Exception):
            await self.close(code=CLOSE_RESYNC)

    # --- the one task that sends, in seq order ---------------------------------------------------

    async def _run(self, since: int | None) -> None:
        try:
            if since is not None:
                self.horizon = since
                await self._fill(None)
            self.replaying = False
            while not self.closing:
                self.parked = True
                await self.wakeup.wait()
                self.parked = False
                self.wakeup.clear()
                batch = sorted(self.buffer, key=lambda p: p["seq"])
                self.buffer.clear()
                for payload in batch:
                    seq = payload["seq"]
                    if seq <= self.horizon:
                        continue  # already sent (replay, gap fill, or a repeated message)
                    if seq > self.horizon + 1:
                        # The hub hands events on gap-free; this is the subscriber's own seam (its
                        # starting point and the hub's), or a hole: read what the log has.
                        await self._fill(seq - 1)
                    if event_matches(payload, **self.filters):
                        await self._send_event(payload)
                    self.horizon = seq
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event stream failed")
            await self._fail()

    async def _fill(self, upto: int | None) -> None:
        """Send every matching event in (horizon, upto] from the log (upto None: to its end)."""
        page = settings.TETHER_EVENTS_REPLAY_PAGE
        while True:
            payloads, complete_to, done = await db_read(_read_page)(self.horizon, upto, self.filters, page)
            for payload in payloads:
                await self._send_event(payload)
                self.horizon = payload["seq"]
            self.horizon = max(self.horizon, complete_to)
            if done:
                return

    async def _send_event(self, payload: dict) -> None:
        await self.send(text_data=self.hub.text(payload))

    async def _stop_pump(self) -> None:
        task, self.pump = self.pump, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _leave_group(self) -> None:
        if self.subscribed:
            self.subscribed = False
            self.hub.unsubscribe(self._on_events)


class UnknownStreamConsumer(AsyncWebsocketConsumer):
    """Every WebSocket path but the event stream's: accepted, told so, closed with 4404 (without a
    route, Channels raises and the server answers the handshake 500)."""

    async def connect(self):
        await self.accept()
        message = {"type": "error", "error": {"code": "not_found",
                                              "message": "no WebSocket here; the event stream is /assignments/events"}}
        await self.send(text_data=json.dumps(message))
        await self.close(code=CLOSE_NOT_FOUND)

    async def receive(self, text_data=None, bytes_data=None):
        pass
