"""config/wsgi_threads.py: HTTP from the ASGI server into a WSGI application on a pool of threads,
driven here as the server drives it (scope, receive, send)."""

import asyncio
import json
import sys
import threading
import time

import pytest
from django.core.wsgi import get_wsgi_application
from django.urls import include as include_
from django.urls import path as path_
from django.test import override_settings

from config.wsgi_threads import ThreadPoolWSGI, long_poll_paths


def scope(method="GET", path="/", headers=()):
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }


def serve(app, requests, *, threads=4):
    """Run each (scope, [receive messages]) through ThreadPoolWSGI; returns, per request, the
    messages sent and how many receive() calls were made."""
    bridge = ThreadPoolWSGI(app, threads=threads)

    async def one(request_scope, incoming):
        incoming, sent, calls = list(incoming), [], [0]

        async def receive():
            calls[0] += 1
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await bridge(request_scope, receive, send)
        return sent, calls[0]

    async def run_all():
        return [await one(s, m) for s, m in requests]

    try:
        return asyncio.run(run_all())
    finally:
        bridge.shutdown()


def echo(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0) or -1)
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Seen", str(len(body)))])
    return [b"got:", body]


def test_a_small_body_is_read_on_the_loop_and_the_answer_sent_in_two_messages():
    [(sent, calls)] = serve(echo, [(scope("POST", headers=[("content-length", "10")]), [
        {"type": "http.request", "body": b"hello", "more_body": True},
        {"type": "http.request", "body": b"world", "more_body": False},
    ])])
    assert calls == 2
    assert sent == [
        {"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain"), (b"x-seen", b"10")]},
        {"type": "http.response.body", "body": b"got:helloworld"},
    ]


def test_no_body_is_not_waited_for():
    [(sent, calls)] = serve(echo, [(scope("DELETE"), [])])
    assert calls == 0
    assert sent[1]["body"] == b"got:"


def test_a_chunked_body_is_read_from_the_thread_as_the_application_asks():
    [(sent, calls)] = serve(echo, [(scope("POST", headers=[("transfer-encoding", "chunked")]), [
        {"type": "http.request", "body": b"a" * 3, "more_body": True},
        {"type": "http.request", "body": b"b" * 4, "more_body": False},
    ])])
    assert sent[1]["body"] == b"got:aaabbbb"
    assert calls == 2


def test_a_client_gone_before_its_body_gets_no_answer_and_the_application_is_not_called():
    called = []

    def app(environ, start_response):
        called.append(1)
        return echo(environ, start_response)

    [(sent, _)] = serve(app, [(scope("POST", headers=[("content-length", "10")]), [{"type": "http.disconnect"}])])
    assert sent == [] and called == []


@pytest.mark.django_db
@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048, FILE_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_an_oversized_body_is_refused_from_its_content_length_without_being_received():
    """Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE by its header: the bridge must not read
    (buffer) it first."""
    [(sent, calls)] = serve(get_wsgi_application(), [(
        scope("POST", "/api/agents/register", headers=[("content-length", "5000000"), ("content-type", "application/json"),
                                                       ("x-enrollment-token", "enr_nobody")]),
        [{"type": "http.request", "body": b"x" * 65536, "more_body": True}],
    )])
    assert calls == 0
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


def test_a_streaming_response_is_sent_chunk_by_chunk_and_closed_on_the_request_thread():
    threads = {}

    class Stream:
        streaming = True

        def __iter__(self):
            threads["iterated"] = threading.get_ident()
            yield b"one"
            yield b""
            yield b"two"

        def close(self):
            threads["closed"] = threading.get_ident()

    def app(environ, start_response):
        threads["called"] = threading.get_ident()
        start_response("200 OK", [("Content-Type", "text/csv")])
        return Stream()

    [(sent, _)] = serve(app, [(scope(), [])])
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/csv")]},
        {"type": "http.response.body", "body": b"one", "more_body": True},
        {"type": "http.response.body", "body": b"two", "more_body": True},
        {"type": "http.response.body", "body": b""},
    ]
    assert threads["called"] == threads["iterated"] == threads["closed"] != threading.get_ident()


def test_a_buffered_response_is_closed_on_the_request_thread():
    """Django's request_finished (which hands the thread's database connection back) runs in close()."""
    threads = {}

    class Response(list):
        def close(self):
            threads["closed"] = threading.get_ident()

    def app(environ, start_response):
        threads["called"] = threading.get_ident()
        start_response("200 OK", [])
        return Response([b"a", b"b"])

    [(sent, _)] = serve(app, [(scope(), [])])
    assert sent[1] == {"type": "http.response.body", "body": b"ab"}
    assert threads["called"] == threads["closed"] != threading.get_ident()


def test_the_write_callable_comes_before_the_returned_body():
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"first,")
        return [b"then"]

    [(sent, _)] = serve(app, [(scope(), [])])
    assert sent[1]["body"] == b"first,then"


def test_each_thread_keeps_its_context_between_requests():
    """As a WSGI server's threads do: context-local objects (Django's cache backends) are built once
    per thread, not once per request."""
    from django.core.cache import caches

    seen = []

    def app(environ, start_response):
        seen.append(id(caches["default"]))
        start_response("204 No Content", [])
        return []

    serve(app, [(scope(), []), (scope(), []), (scope(), [])], threads=1)
    assert len(seen) == 3 and len(set(seen)) == 1


def test_an_application_error_reaches_the_server():
    def app(environ, start_response):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        serve(app, [(scope(), [])])


def test_only_http_is_served():
    with pytest.raises(ValueError, match="HTTP only"):
        asyncio.run(ThreadPoolWSGI(echo, threads=1)({"type": "websocket"}, None, None))


def _one_long_poll_and_one_request(bridge) -> tuple[bool, bool]:
    """A long-poll (its application sleeps until released) and, while it sleeps, an ordinary request
    on a bridge with one ordinary thread: (whether the ordinary one was answered while the long-poll
    slept, whether the long-poll was answered once released)."""
    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/poll":
            release.wait(5)
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    bridge.app = app

    async def one(path):
        sent = []

        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await bridge(scope(path=path), receive, send)
        return sent[1]["body"]

    async def run():
        poll = asyncio.create_task(one("/poll"))
        await asyncio.sleep(0.05)  # the long-poll is asleep on its thread
        try:
            answered = await asyncio.wait_for(one("/other"), 1) == b"/other"
        except TimeoutError:
            answered = False
        release.set()
        return answered, await asyncio.wait_for(poll, 5) == b"/poll"

    try:
        return asyncio.run(run())
    finally:
        release.set()
        bridge.shutdown()


def test_a_long_poll_sleeps_on_a_thread_of_its_own_not_one_other_requests_wait_for():
    bridge = ThreadPoolWSGI(None, threads=1, long_poll_threads=1, long_poll=lambda path: path == "/poll")
    assert _one_long_poll_and_one_request(bridge) == (True, True)


def test_without_a_long_poll_pool_the_long_poll_keeps_the_thread():
    """The control: one thread for everything, and the request waits behind the sleeping long-poll."""
    bridge = ThreadPoolWSGI(None, threads=1, long_poll=lambda path: path == "/poll")
    assert _one_long_poll_and_one_request(bridge) == (False, True)


def test_the_long_polls_are_the_views_that_say_so():
    """Built from the URL conf: the task claim (`long_poll = True`) and nothing else."""
    pattern = long_poll_paths()
    assert pattern.match("/api/agents/agent-1/tasks/claim")
    for path in ("/api/agents/agent-1/heartbeat", "/api/agents/agent-1/tasks", "/api/agents/a/b/tasks/claim",
                 "/api/agents/agent-1/tasks/claimed", "/api/assignments", "/agents/agent-1/tasks/claim", "/"):
        assert not pattern.match(path), path


class _LongPoll:
    long_poll = True

    @classmethod
    def as_view(cls):
        def view(request, **kwargs):
            raise AssertionError("not called")

        view.view_class = cls
        return view


class _Quick(_LongPoll):
    long_poll = False


urlpatterns = [
    # Two long-polls whose routes name the same parameter, under an include: one pattern still.
    path_("a/", include_([path_("<str:name>/wait", _LongPoll.as_view()), path_("<str:name>/now", _Quick.as_view())])),
    path_("b/<str:name>/wait", _LongPoll.as_view()),
]


def test_long_poll_paths_walks_includes_and_tolerates_repeated_parameter_names():
    pattern = long_poll_paths(__name__)
    assert pattern.match("/a/x/wait") and pattern.match("/b/y/wait")
    assert not pattern.match("/a/x/now") and not pattern.match("/c/x/wait")


def test_no_long_polls_no_pattern(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "tests._no_long_polls", types.SimpleNamespace(urlpatterns=[
        path_("b/<str:name>/now", _Quick.as_view())]))
    assert long_poll_paths("tests._no_long_polls") is None


def test_a_request_notes_when_it_arrived_before_it_waits_for_a_thread():
    """config.api.views.request_received: the second of two requests on one thread arrived while the
    first ran, and its note says so (a long-poll counts its wait from there)."""
    from config.api.views import RECEIVED

    seen = {}

    def app(environ, start_response):
        seen[environ["PATH_INFO"]] = (environ[RECEIVED], time.monotonic())
        if environ["PATH_INFO"] == "/first":
            time.sleep(0.2)
        start_response("204 No Content", [])
        return []

    bridge = ThreadPoolWSGI(app, threads=1)

    async def one(path):
        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            pass

        await bridge(scope(path=path), receive, send)

    async def run():
        first = asyncio.create_task(one("/first"))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, one("/second"))

    try:
        asyncio.run(run())
    finally:
        bridge.shutdown()
    received, started = seen["/second"]
    first_started = seen["/first"][1]
    assert first_started < received < started  # it arrived while the first ran, and waited for it
    assert started - received >= 0.1
