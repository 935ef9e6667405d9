"""The event stream, resumed from its last `seq` across reconnects.

`ws://HOST/assignments/events?since=N&types=…&pool=…&agent_id=…&profile_id=…` replays every stored
event after N, then streams live (docs/events.md). This iterator keeps the last seq it handed out and,
whatever ends the socket (a network drop, the server restarting, `{"type": "resync"}` for a slow
reader), connects again with `since=<it>`; it drops anything at or below it, so the caller sees every
event once, in seq order. Where the WebSocket cannot be opened at all (a proxy that refuses the
upgrade) it reads the same log from `GET /api/events?since=N` instead.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from tether_client._http import Http
from tether_client.errors import ApiError, ConnectionFailed, Forbidden, NotAuthenticated, ValidationError
from tether_client.models import Event

_CLOSE_ERRORS: dict[int, type[ApiError]] = {4400: ValidationError, 4401: NotAuthenticated, 4403: Forbidden}


class EventStream:
    """Iterate for `Event`s (blocking); `get(timeout)` waits at most that long; `close()` ends it.
    `last_seq` is the seq of the last event handed out; `reconnects` counts the reconnections."""

    def __init__(
        self,
        http: Http,
        *,
        since: int | None = 0,
        types: Sequence[str] | str | None = None,
        pool: str | None = None,
        agent_id: str | None = None,
        profile_id: str | None = None,
        reconnect: bool = True,
        poll_interval: float = 1.0,
        use_websocket: bool = True,
    ) -> None:
        self.http = http
        # None: from now on (the server streams what commits after the handshake); then the last seq seen.
        self.last_seq: int | None = since
        self.filters: dict[str, str] = {}
        if types:
            self.filters["types"] = types if isinstance(types, str) else ",".join(types)
        for key, value in (("pool", pool), ("agent_id", agent_id), ("profile_id", profile_id)):
            if value:
                self.filters[key] = value
        self.reconnect = reconnect
        self.poll_interval = poll_interval
        self.polling = not use_websocket
        self.reconnects = 0
        self.connection: ClientConnection | None = None
        self._buffer: deque[Event] = deque()
        self._closed = False
        self._failures = 0

    # --- public ---------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        while not self._closed:
            event = self.get(timeout=None)
            if event is not None:
                yield event

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> EventStream:
        """Subscribe now rather than on the first `get`: once this returns, every event committed
        from then on will be handed out (with `since=None`, "from now on" starts here). Raises
        `ConnectionFailed` or `NotAuthenticated` when the stream cannot be opened."""
        if not self.polling and self.connection is None:
            try:
                self._connect()
            except (InvalidHandshake, OSError, TimeoutError) as exc:
                raise ConnectionFailed(f"could not open the event stream: {exc}") from None
        if self.polling and self.last_seq is None:
            self._poll(0)  # skips to the end of the log: "from now on"
        return self

    def close(self) -> None:
        self._closed = True
        self._disconnect()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when `timeout` seconds pass without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if self._buffer:
                return self._buffer.popleft()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if self.polling:
                self._poll(remaining)
            else:
                self._receive(remaining)
        return None

    # --- WebSocket ------------------------------------------------------------------------------

    def ws_url(self) -> str:
        parts = urlsplit(self.http.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        since = {} if self.last_seq is None else {"since": self.last_seq}
        query = urlencode({**since, **self.filters})
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/assignments/events", query, ""))

    def _connect(self) -> None:
        headers = {"Authorization": f"Token {self.http.token}"} if self.http.token else None
        try:
            connection = connect(self.ws_url(), additional_headers=headers, open_timeout=15,
                                 close_timeout=2, max_size=2**22)
            # Held across calls rather than in a `with` block; entering it says so (websockets ≥ 17.1
            # warns about connections used without one). `close()` ends it.
            self.connection = connection.__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise NotAuthenticated(f"the event stream refused the credential (HTTP {status})",
                                       status=status, code="not_authenticated") from None
            if status in (404, 400, 405, 426):
                self.polling = True  # no WebSocket here: read the log over HTTP instead
                return
            raise ConnectionFailed(f"the event stream answered HTTP {status}") from None
        except InvalidURI as exc:
            raise ConnectionFailed(f"invalid Tether URL {self.http.base_url!r}: {exc}") from None

    def _disconnect(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 — it is going away anyway
                pass

    def _receive(self, timeout: float | None) -> None:
        try:
            if self.connection is None:
                self._connect()
                if self.connection is None:
                    return
            raw = self.connection.recv(timeout=timeout)
        except TimeoutError:
            return
        except (ConnectionClosed, InvalidHandshake, OSError, ConnectionFailed) as exc:
            self._lost(exc)
            return
        self._failures = 0
        self._handle(json.loads(raw))

    def _handle(self, message: dict[str, Any]) -> None:
        if "seq" in message:
            event = Event.from_json(message)
            if self.last_seq is None or event.seq > self.last_seq:  # else handed out before a reconnect
                self.last_seq = event.seq
                self._buffer.append(event)
            return
        kind = message.get("type")
        if kind == "resync":
            # Too slow to keep up: the server closes; resume from what it says we have seen.
            self.last_seq = max(self.last_seq or 0, int(message.get("since") or 0))
            self._lost(None)
        elif kind == "error":
            error = message.get("error") or {}
            code = str(error.get("code") or "error")
            text = str(error.get("message") or code)
            cls = {"not_authenticated": NotAuthenticated, "forbidden": Forbidden}.get(code, ValidationError)
            self.close()
            raise cls(f"the event stream refused: {text}", status=0, code=code)

    def _lost(self, exc: BaseException | None) -> None:
        close_code = getattr(getattr(exc, "rcvd", None), "code", None)
        self._disconnect()
        if close_code in _CLOSE_ERRORS:
            self.close()
            cls = _CLOSE_ERRORS[close_code]
            raise cls(f"the event stream closed with {close_code}", status=0, code=str(close_code))
        if not self.reconnect:
            self.close()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise ConnectionFailed(f"the event stream failed: {exc}") from None
            return
        self.reconnects += 1
        self._failures += 1
        if self._failures > 1:  # the first reconnect is at once; then back off, with jitter
            time.sleep(random.uniform(0, min(10.0, 0.2 * 2 ** min(self._failures, 6))))

    # --- polling fallback -----------------------------------------------------------------------

    def _poll(self, timeout: float | None) -> None:
        if self.last_seq is None:  # "from now on": skip to the end of the log first
            since = 0
            while True:
                body = self.http.get("/api/events", params={"since": since, "limit": 500, **self.filters})
                if not body.get("next"):
                    break
                since = int(body.get("last_seq") or since)
            self.last_seq = int(body.get("last_seq") or since)
            return
        body = self.http.get("/api/events", params={"since": self.last_seq, **self.filters})
        for item in body.get("results", []):
            self._handle(item)
        if not self._buffer:
            time.sleep(self.poll_interval if timeout is None else max(0.0, min(self.poll_interval, timeout)))
