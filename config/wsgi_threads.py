"""HTTP from the ASGI server into Django's WSGI handler on a fixed pool of threads: one hand-off from
the event loop to a thread and one back per request.

a2wsgi (which this replaced, and whose environ builder and lazy body it still uses) hands every step
across: the request body is read from the thread through the loop, and each of a response's three
messages (start, body, end) is a coroutine scheduled on the loop that the thread then waits for —
four or five round trips between the threads per request, each waking the loop and passing the GIL.
A py-spy of `make serve` under take → release put that machinery (futures, conditions, the loop's
wake-ups) at ~10% of the server's CPU. Here:

- a small body (a declared Content-Length up to the larger of Django's two upload limits) is read on
  the loop before the thread starts, as Django's own ASGI handler reads every body; a larger one, or a
  chunked one, is read lazily from the thread as before (so Django can refuse an oversized body
  from its Content-Length without it being received);
- a response whose body is in memory (`HttpResponse`: every API answer) is built entirely in the
  thread, closed there (Django's `request_finished`, which returns the thread's database connection,
  must run on the request's thread), and sent by the loop in two messages;
- a streaming response (files, exports) is sent chunk by chunk from the thread, as before.

Each thread runs requests in its own context, as a WSGI server's threads do (a2wsgi ran each in a
fresh copy of the loop's context, so context-local objects such as Django's cache backends were
rebuilt on every request).

Two pools. Ordinary requests run on a few threads (TETHER_HTTP_THREADS): with a worker's requests
competing for one GIL, more threads than the CPU can use only make each transaction hold its locks
longer while its thread waits for the GIL (measured: docs/bench-api.md, eighth session). A request
for a view that may sleep for seconds — a long-poll, `long_poll = True` on its view class, such as a
task claim with `wait_seconds` — runs on a pool of its own (TETHER_HTTP_LONG_POLL_THREADS), so that
agents waiting for work never keep the others' requests waiting for a thread.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import Body, build_environ
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

from config.api.views import RECEIVED


def _small_body_limit() -> int:
    return max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0, settings.FILE_UPLOAD_MAX_MEMORY_SIZE or 0)


def _declared_length(scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is chunked)."""
    length, chunked = None, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


async def _read_small_body(receive) -> io.BytesIO | None:
    """The whole body, or None when the client went away before sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return io.BytesIO(b"".join(chunks))


def _status_code(status: str) -> int:
    return int(status.split(" ", 1)[0])


def _headers(headers) -> list[tuple[bytes, bytes]]:
    return [(name.strip().lower().encode("latin1"), value.strip().encode("latin1")) for name, value in headers]


def long_poll_paths(urlconf=None) -> re.Pattern | None:
    """One regular expression matching the paths of every view whose class says `long_poll = True`
    (built from the URL conf once, so routing a request costs one match, not a URL resolution), or
    None when there are none."""
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            regex = prefix + entry.pattern.regex.pattern.removeprefix("^")
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, regex)
            elif isinstance(entry, URLPattern):
                view_class = getattr(entry.callback, "view_class", None)
                if getattr(view_class, "long_poll", False):
                    found.append(re.sub(r"\(\?P<\w+>", "(?:", regex))  # names could clash across views

    walk(get_resolver(urlconf).url_patterns, "")
    return re.compile("^/(?:" + "|".join(f"(?:{r})" for r in found) + ")") if found else None


class ThreadPoolWSGI:
    """An ASGI application (HTTP only) serving a WSGI application on `threads` threads, and the
    requests `long_poll(path)` says may sleep on `long_poll_threads` more."""

    def __init__(self, app, *, threads: int, long_poll_threads: int = 0,
                 long_poll: Callable[[str], bool] | None = None):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="WSGI")
        self.long_poll = long_poll if long_poll_threads else None
        self.long_poll_executor = (
            ThreadPoolExecutor(max_workers=long_poll_threads, thread_name_prefix="WSGI-long-poll")
            if self.long_poll else None
        )

    def shutdown(self) -> None:
        for executor in (self.executor, self.long_poll_executor):
            if executor is not None:
                executor.shutdown()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"ThreadPoolWSGI serves HTTP only, not {scope['type']!r}")
        loop = asyncio.get_running_loop()
        length, chunked = _declared_length(scope)
        if chunked or (length is not None and length > _small_body_limit()):
            body = Body(loop, receive)  # read from the thread as Django asks for it
        elif length is not None and length > 0:
            body = await _read_small_body(receive)
            if body is None:
                return  # the client is gone: nothing to answer
        else:
            body = io.BytesIO()
        environ = build_environ(scope, body)
        environ[RECEIVED] = time.monotonic()  # before any wait for a thread (config.api.views.request_received)
        executor = self.long_poll_executor if self.long_poll and self.long_poll(scope["path"]) else self.executor
        response = await loop.run_in_executor(executor, self._respond, environ, loop, send)
        if response is not None:
            status, headers, content = response
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

    def _respond(self, environ, loop, send):
        """On a pool thread: run the application. Returns (status, headers, body) for the loop to
        send, or None when this thread has sent a streaming response itself."""
        started: list = []  # [status, headers], as the application last gave them
        written: list[bytes] = []
        streaming = False  # True once this thread has sent the status line

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and streaming:
                raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late to change the status
            started[:] = [status, headers]
            return written.append  # the legacy write() callable: kept in order before the body

        iterable = self.app(environ, start_response)
        try:
            if not getattr(iterable, "streaming", False):
                content = b"".join(written) + b"".join(iterable)
                return _status_code(started[0]), _headers(started[1]), content

            def send_from_thread(message):
                asyncio.run_coroutine_threadsafe(send(message), loop).result()

            streaming = True
            send_from_thread({"type": "http.response.start", "status": _status_code(started[0]),
                              "headers": _headers(started[1])})
            for chunk in itertools.chain(written, iterable):
                if chunk:
                    send_from_thread({"type": "http.response.body", "body": chunk, "more_body": True})
            send_from_thread({"type": "http.response.body", "body": b""})
            return None
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
