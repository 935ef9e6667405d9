"""ws://HOST/assignments/events: filters, replay then live, reconnects, lost live messages, rollbacks,
slow subscribers — against the real ASGI application, Redis channel layer and PostgreSQL."""

import asyncio
import json
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

import dashboard.publish
from agents.services import agent_mark_stale
from assignments.events import event_payload, event_record, recorded_transaction
from assignments.models import Event
from assignments.services import assignment_create, assignment_release
from config.actors import Actor
from config.errors import NotFound
from dashboard.consumers import CLOSE_RESYNC
from dashboard.publish import EVENTS_GROUP
from tests.dashboard.events_support import (
    OPERATOR,
    amake_profiles,
    application,
    closed_with,
    last_seq,
    make_profiles,
    nothing_more,
    receive_events,
    session_cookie_for,
    ws_connect,
)
from tests.factories import AgentFactory, PoolFactory, ProfileFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
async def headers():
    from django.contrib.auth import get_user_model

    user = await database_sync_to_async(get_user_model().objects.create_user)(username="watcher", password=None)
    return await database_sync_to_async(session_cookie_for)(user)


def _seqs(events):
    return [e["seq"] for e in events]


# --- filters --------------------------------------------------------------------------------------


def _filter_scene():
    pool_a, pool_b = PoolFactory(name="pool-a"), PoolFactory(name="pool-b")
    AgentFactory(pool=pool_a, agent_id="a1")
    AgentFactory(pool=pool_b, agent_id="b1")
    ProfileFactory(profile_id="p1", pool=pool_a)
    ProfileFactory(profile_id="p2", pool=pool_b)
    start = last_seq()
    first = assignment_create(profile_id="p1", agent_id="a1", actor=OPERATOR)  # assignment.created a1/p1/pool-a
    assignment_release(assignment_id=first.assignment_id, actor=Actor.for_agent("a1"))  # assignment.released
    assignment_create(profile_id="p2", agent_id="b1", actor=OPERATOR)  # assignment.created b1/p2/pool-b
    make_profiles("p-extra", 1, pool="pool-b")  # profile.created pool-b
    agent_mark_stale(agent_id="b1", actor=OPERATOR)  # agent.stale, assignment.reassigned, alert.raised ×2
    return [event_payload(e) for e in Event.objects.filter(seq__gt=start).order_by("seq")]


FILTERS = {
    "types=assignment.created": lambda e: e["type"] == "assignment.created",
    "types=assignment.": lambda e: e["type"].startswith("assignment."),
    "types=assignment.*": lambda e: e["type"].startswith("assignment."),
    "types=profile.created,agent.stale": lambda e: e["type"] in ("profile.created", "agent.stale"),
    "pool=pool-a": lambda e: e["pool"] == "pool-a",
    "agent_id=b1": lambda e: e["agent_id"] == "b1",
    "profile_id=p1": lambda e: e["profile_id"] == "p1",
    "types=assignment.&pool=pool-b": lambda e: e["type"].startswith("assignment.") and e["pool"] == "pool-b",
}


@pytest.mark.parametrize("mode", ["live", "replay"])
async def test_each_filter_gets_exactly_the_matching_events_in_order(headers, mode):
    start = await database_sync_to_async(last_seq)()
    subscribers = {}
    if mode == "live":
        for query in FILTERS:
            subscribers[query] = await ws_connect(f"/assignments/events?{query}", headers=headers)
    events = await database_sync_to_async(_filter_scene)()
    assert {e["type"] for e in events} >= {"assignment.created", "assignment.released", "profile.created",
                                           "agent.stale", "assignment.reassigned", "alert.raised"}
    if mode == "replay":
        for query in FILTERS:
            subscribers[query] = await ws_connect(f"/assignments/events?since={start}&{query}", headers=headers)
    for query, matches in FILTERS.items():
        expected = [e for e in events if matches(e)]
        assert expected, f"the scene has no event for {query}"
        received = await receive_events(subscribers[query], len(expected))
        assert received == expected, query  # the exact payloads, in seq order
        assert await nothing_more(subscribers[query], 0.1), query
        await subscribers[query].disconnect()


async def test_a_filtered_stream_is_woken_only_for_its_own_events(headers, monkeypatch):
    """An agent's stream wants few of the events the hub hands every subscriber: those for others
    move its horizon on without waking its sending task (dashboard/consumers.py, `_passed_by`), and
    it still gets its own, in order, with nothing read again from the log."""
    from dashboard.consumers import EventStreamConsumer

    woken, filled = [], []
    wake, fill = EventStreamConsumer._wake, EventStreamConsumer._fill

    def counting(self):
        woken.append(self.query.profile_id)
        wake(self)

    async def counting_fill(self, upto):
        filled.append(self.query.profile_id)
        await fill(self, upto)

    monkeypatch.setattr(EventStreamConsumer, "_wake", counting)
    monkeypatch.setattr(EventStreamConsumer, "_fill", counting_fill)
    mine = await ws_connect("/assignments/events?profile_id=mine-0", headers=headers)
    everyone = await ws_connect("/assignments/events", headers=headers)
    await amake_profiles("first", 1)  # the seam of an empty log with its seqs far on: read from it once
    await receive_events(everyone, 1)
    woken.clear()
    filled.clear()
    others = await amake_profiles("other", 6)
    own = await amake_profiles("mine", 1)
    assert _seqs(await receive_events(mine, 1)) == own
    later = await amake_profiles("later", 3)
    assert _seqs(await receive_events(everyone, 10)) == others + own + later
    await asyncio.sleep(0.1)  # every event handed on by the hub to both
    assert await nothing_more(mine)
    assert woken.count("mine-0") == 1  # the one batch that was for it
    assert woken.count(None) >= 1  # the unfiltered stream is woken as before
    assert "mine-0" not in filled  # nothing read from the log: its horizon kept up
    # Its horizon moved past the others' events: a reconnect from where it stood resumes after them.
    await mine.disconnect()
    again = await ws_connect(f"/assignments/events?since={later[-1]}&profile_id=mine-0", headers=headers)
    assert await nothing_more(again)
    await again.disconnect()
    await everyone.disconnect()


# --- replay, the seam, reconnects -----------------------------------------------------------------


async def test_replay_then_live_without_duplicate_at_the_seam(headers):
    start = await database_sync_to_async(last_seq)()
    replayed = await amake_profiles("before", 5)
    communicator = await ws_connect(f"/assignments/events?since={start}", headers=headers)
    assert _seqs(await receive_events(communicator, 5)) == replayed
    # Live messages for events the replay already sent (a publish that arrives late): dropped.
    stored = await database_sync_to_async(lambda: [event_payload(e) for e in Event.objects.filter(seq__in=replayed[2:])])()
    await get_channel_layer().group_send(EVENTS_GROUP, {"type": "events.publish", "events": stored})
    live = await amake_profiles("after", 2)
    assert _seqs(await receive_events(communicator, 2)) == live
    assert await nothing_more(communicator)
    await communicator.disconnect()


async def test_changes_made_during_a_long_replay_arrive_once_and_in_order(headers, settings):
    settings.TETHER_EVENTS_REPLAY_PAGE = 3  # many small pages, so the writer interleaves with them
    start = await database_sync_to_async(last_seq)()
    await amake_profiles("old", 30)
    writing = threading.Thread(target=lambda: (make_profiles("new", 30), __import__("django.db").db.connections.close_all()))
    writing.start()
    try:
        communicator = await ws_connect(f"/assignments/events?since={start}", headers=headers)
        received = await receive_events(communicator, 60, timeout=10)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, writing.join)
    expected = await database_sync_to_async(lambda: list(Event.objects.filter(seq__gt=start).order_by("seq").values_list("seq", flat=True)))()
    assert len(expected) == 60
    assert _seqs(received) == expected
    assert await nothing_more(communicator)
    await communicator.disconnect()


async def test_client_reconnecting_after_100_changes_gets_exactly_those_100_in_order(headers):
    communicator = await ws_connect(headers=headers)
    seen = _seqs(await receive_events(communicator, 3)) if await amake_profiles("seen", 3) else []
    await communicator.disconnect()
    missed = await amake_profiles("missed", 100)
    again = await ws_connect(f"/assignments/events?since={seen[-1]}", headers=headers)
    received = await receive_events(again, 100)
    assert _seqs(received) == missed
    assert [e["profile_id"] for e in received] == [f"missed-{i}" for i in range(100)]
    assert await nothing_more(again)
    await again.disconnect()


# --- lost live messages ---------------------------------------------------------------------------


@pytest.fixture
def publishing_dropped(monkeypatch):
    """Live messages are lost (a full channel-layer channel, a Redis blip) while `drop` is set."""
    state = {"drop": False}
    real = dashboard.publish.publish_events

    def lossy(payloads):
        if not state["drop"]:
            real(payloads)

    monkeypatch.setattr(dashboard.publish, "publish_events", lossy)
    return state


async def test_lost_live_messages_are_read_from_the_log_before_the_next_event(headers, publishing_dropped):
    communicator = await ws_connect(headers=headers)
    publishing_dropped["drop"] = True
    lost = await amake_profiles("lost", 3)
    publishing_dropped["drop"] = False
    live = await amake_profiles("live", 1)
    assert _seqs(await receive_events(communicator, 4)) == lost + live
    assert await nothing_more(communicator)
    await communicator.disconnect()


async def test_a_lost_last_message_is_found_by_the_idle_check(headers, publishing_dropped, settings):
    settings.TETHER_EVENTS_POLL_SECONDS = 0.2
    communicator = await ws_connect(headers=headers)
    publishing_dropped["drop"] = True
    lost = await amake_profiles("quiet", 1)
    assert _seqs(await receive_events(communicator, 1, timeout=3)) == lost
    await communicator.disconnect()


# --- rollbacks ------------------------------------------------------------------------------------


def _rolled_back_changes():
    class Boom(Exception):
        pass

    try:
        with recorded_transaction():
            event_record(Event.Type.PROFILE_UPDATED, actor=OPERATOR, profile_id="never")
            raise Boom
    except Boom:
        pass
    with pytest.raises(NotFound):  # a service that fails half-way: its events go with its changes
        assignment_create(profile_id="nope", agent_id="nobody", actor=OPERATOR)


async def test_rolled_back_change_publishes_nothing(headers):
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(EVENTS_GROUP, listener)
    communicator = await ws_connect(headers=headers)
    before = await database_sync_to_async(last_seq)()

    await database_sync_to_async(_rolled_back_changes)()

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(listener), timeout=0.5)
    assert await nothing_more(communicator)
    assert await database_sync_to_async(last_seq)() == before
    # ...and the stream goes on with the next committed change.
    committed = await amake_profiles("committed", 1)
    assert _seqs(await receive_events(communicator, 1)) == committed
    message = await asyncio.wait_for(layer.receive(listener), timeout=2)
    assert _seqs(message["events"]) == committed
    await layer.group_discard(EVENTS_GROUP, listener)
    await communicator.disconnect()


# --- slow subscribers -----------------------------------------------------------------------------


def _slow_client(app, seconds_per_message):
    """A client that reads slowly, as a server with backpressure (send waits for the socket) sees it."""

    async def wrapped(scope, receive, send):
        async def slow_send(message):
            if message["type"] == "websocket.send":
                await asyncio.sleep(seconds_per_message)
            await send(message)

        return await app(scope, receive, slow_send)

    return wrapped


async def test_slow_subscriber_is_told_to_resync_and_closed_without_delaying_others(headers, settings):
    settings.TETHER_EVENTS_CLIENT_BUFFER = 20
    start = await database_sync_to_async(last_seq)()
    slow = WebsocketCommunicator(_slow_client(application(), 0.2), "/assignments/events", headers=headers)
    assert (await slow.connect(timeout=5))[0]
    fast = await ws_connect(headers=headers)

    loop = asyncio.get_running_loop()
    # Paced (5 changes, then a breath of the loop): one burst of 100 committed at once can overrun
    # even a prompt reader's buffer of 20 before its send loop runs — that reader would rightly be
    # told to resync too. Paced, a prompt reader keeps up, and the slow one (5 messages a second)
    # still falls 20 behind within the first second.
    made = []
    for batch in range(20):
        made += await amake_profiles(f"burst{batch}-", 5)
        await asyncio.sleep(0.02)
    fast_events = await receive_events(fast, 100, timeout=5)  # 100 × 0.2 s = 20 s if it waited on the slow one
    took = loop.time()
    assert _seqs(fast_events) == made

    code, slow_messages = await closed_with(slow, timeout=10)
    assert code == CLOSE_RESYNC
    *slow_events, resync = slow_messages
    assert resync["type"] == "resync"
    assert len(slow_events) < 100 and _seqs(slow_events) == [s for s in made if s <= resync["since"]]
    assert loop.time() - took < 10
    # Resuming from the seq it was given, it gets the rest exactly once.
    again = await ws_connect(f"/assignments/events?since={resync['since']}", headers=headers)
    rest = await receive_events(again, 100 - len(slow_events))
    assert _seqs(slow_events + rest) == made and made[0] > start
    assert await nothing_more(again)
    await again.disconnect()
    await fast.disconnect()


async def test_messages_are_exactly_the_event_payload_shape(headers):
    communicator = await ws_connect(headers=headers)
    seq = (await amake_profiles("shape", 1))[0]
    message = json.loads((await communicator.receive_output(5))["text"])
    stored = await database_sync_to_async(lambda: event_payload(Event.objects.get(seq=seq)))()
    assert message == stored
    assert list(message) == ["seq", "type", "occurred_at", "actor", "assignment_id", "profile_id", "agent_id",
                             "pool", "from_status", "to_status", "data"]
    await communicator.disconnect()


# --- the process hub ------------------------------------------------------------------------------


async def test_many_subscribers_in_one_process_are_one_group_member(headers):
    from dashboard.hub import event_hub

    hub = event_hub()
    layer = hub.layer

    async def members():
        async with layer.connection(layer.consistent_hash(EVENTS_GROUP)) as connection:
            return set(await connection.zrange(layer._group_key(EVENTS_GROUP), 0, -1))

    before = await members()  # earlier tests' loops may have left theirs behind
    subscribers = [await ws_connect(headers=headers) for _ in range(5)]
    assert {m.decode() for m in await members() - before} == {hub.channel}
    seqs = await amake_profiles("fan", 2)
    for s in subscribers:
        assert _seqs(await receive_events(s, 2)) == seqs
        await s.disconnect()


async def test_the_hub_reads_what_the_group_was_sent_in_order_several_at_once():
    """With channels-redis the hub reads its channel's sorted set itself (dashboard/hub.py, `_read`):
    messages sent to the group come back whole, in the order sent, without channels-redis's
    routing field, several in one read when several wait."""
    from dashboard.hub import EventHub, _layer_for_this_loop

    layer = _layer_for_this_loop()
    hub = EventHub(layer)  # not subscribed: nothing else reads its channel
    hub.channel = await layer.new_channel()
    await layer.group_add(EVENTS_GROUP, hub.channel)
    try:
        sent = [{"type": "events.publish", "events": [{"seq": 10**9 + i}]} for i in range(3)]
        for message in sent:
            await get_channel_layer().group_send(EVENTS_GROUP, message)
        read = []
        while len(read) < 3:
            read += await asyncio.wait_for(hub._read(), 5)
        assert read == sent
    finally:
        await layer.group_discard(EVENTS_GROUP, hub.channel)


async def test_a_failing_channel_layer_receive_loses_nothing(headers):
    """The hub's receive fails once and the message it was reading is lost with it: the hub goes on
    listening, and the next event's gap is read from the log."""
    from dashboard.hub import event_hub

    communicator = await ws_connect(headers=headers)
    hub = event_hub()
    real_read = hub._read  # the hub's read of its channel (the layer's receive, or its own with Redis)
    failed = asyncio.Event()

    async def lossy_read():
        if not failed.is_set():
            await real_read()  # the message is read... and lost
            failed.set()
            raise ConnectionError("Redis went away")
        return await real_read()

    hub._read = lossy_read
    try:
        # The receive already waiting gets the first; the next one (patched) reads the second and fails.
        first = await amake_profiles("flaky-a", 1)
        second = await amake_profiles("flaky-b", 1)
        await asyncio.wait_for(failed.wait(), 5)
        third = await amake_profiles("flaky-c", 1)
        assert _seqs(await receive_events(communicator, 3)) == first + second + third
        assert await nothing_more(communicator)
    finally:
        del hub._read  # the method again
        await communicator.disconnect()


@pytest.mark.redis
def test_publishing_does_not_make_the_request_wait_for_the_channel_layer(monkeypatch, settings):
    """A slow channel layer delays the live message, not the committing request; batches still go
    out in commit order, and publish_flush waits for them."""
    import time as _time

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if not dashboard.publish.is_channels_redis(layer):
        pytest.skip("the in-memory layer publishes on the server's own loop")
    sent = []

    def slow_send(self, layer, message):
        _time.sleep(0.3)
        sent.extend(event["seq"] for event in message["events"])

    monkeypatch.setattr(dashboard.publish._Sender, "send", slow_send)
    t0 = _time.perf_counter()
    for seq in (1, 2, 3):
        dashboard.publish.publish_events([{"seq": seq}])
    assert _time.perf_counter() - t0 < 0.2
    assert dashboard.publish.publish_flush(timeout=5)
    assert sent == [1, 2, 3]


@pytest.mark.redis
def test_what_queued_up_during_a_send_goes_out_as_one_message_in_order(monkeypatch, settings):
    """A burst of commits costs one send, not one each: the batches queued while the sender was
    busy are merged into one message, their events in queue order."""
    import threading

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if not dashboard.publish.is_channels_redis(layer):
        pytest.skip("the in-memory layer publishes on the server's own loop")
    sent, busy, go_on = [], threading.Event(), threading.Event()

    def blocked_send(self, layer, message):
        busy.set()
        go_on.wait(5)
        sent.append([event["seq"] for event in message["events"]])

    monkeypatch.setattr(dashboard.publish._Sender, "send", blocked_send)
    dashboard.publish.publish_events([{"seq": 1}])
    assert busy.wait(5)  # the sender is inside its first send
    for batch in ([{"seq": 2}, {"seq": 3}], [{"seq": 4}], [{"seq": 5}]):
        dashboard.publish.publish_events(batch)
    go_on.set()
    assert dashboard.publish.publish_flush(timeout=5)
    assert sent == [[1], [2, 3, 4, 5]]


@pytest.mark.redis
def test_the_sender_delivers_what_channels_redis_would_to_every_member_of_the_group(settings):
    """dashboard/publish.py writes channels-redis's group send itself (two scripts, one Redis
    round trip each): every member gets each message through channels-redis's own receive, in
    order."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if not dashboard.publish.is_channels_redis(layer):
        pytest.skip("the in-memory layer publishes on the server's own loop")

    async def join():
        names = [await layer.new_channel() for _ in range(2)]
        for name in names:
            await layer.group_add(EVENTS_GROUP, name)
        return names

    names = async_to_sync(join)()
    try:
        for seq in (101, 102):
            dashboard.publish.publish_events([{"seq": seq, "type": "test.sent"}])
        assert dashboard.publish.publish_flush(timeout=5)

        async def receive(name):
            # One message or two: batches that queued up together go out as one (test above).
            first = await asyncio.wait_for(layer.receive(name), 5)
            seqs = [event["seq"] for event in first["events"]]
            if seqs == [101]:
                seqs += [event["seq"] for event in (await asyncio.wait_for(layer.receive(name), 5))["events"]]
            return seqs, first["type"]

        for name in names:
            assert async_to_sync(receive)(name) == ([101, 102], "events.publish")
    finally:
        async def leave():
            for name in names:
                await layer.group_discard(EVENTS_GROUP, name)

        async_to_sync(leave)()


@pytest.mark.redis
def test_the_sender_reaches_a_host_given_as_host_and_port_too(settings):
    """channels-redis takes a host as a URL or as (host, port): the sender connects either way."""
    from urllib.parse import urlsplit

    from channels_redis.core import RedisChannelLayer

    url = urlsplit(settings.REDIS_URL)
    for hosts in ([settings.REDIS_URL], [(url.hostname, url.port or 6379)]):
        layer = RedisChannelLayer(hosts=hosts, prefix="tether-test-sender")
        members, _ = dashboard.publish._Sender._scripts(dashboard.publish._publisher(), layer)
        assert members(keys=[layer._group_key(EVENTS_GROUP)], args=[0]) == []
