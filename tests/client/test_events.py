"""The SDK's event stream over the real WebSocket: replay from `since`, live events, and resume from
the last seq after the connection is cut — no gap, no duplicate."""

import socket

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _log(ops, since, pool):
    """The pool's events after `since`, from the HTTP log — what the stream must have handed out."""
    seqs = []
    while True:
        page = ops.events_page(since=since, pool=pool, limit=1000)
        seqs += [e["seq"] for e in page["results"]]
        if not page["next"]:
            return seqs
        since = page["last_seq"]


def _take_and_release(agent, profiles):
    for profile_id in profiles:
        with agent.profile(profile_id):
            pass


def _collect(stream, count, timeout=20):
    events = []
    while len(events) < count:
        event = stream.get(timeout=timeout)
        assert event is not None, f"only {len(events)} of {count} events arrived"
        events.append(event)
    return events


def test_events_replay_from_since_then_stream_live(world):
    ops = world.ops()
    agent = world.agent()
    _take_and_release(agent, world.profiles[:2])
    replayed = _log(ops, 0, world.pool)

    with ops.events(since=0, pool=world.pool) as stream:
        first = _collect(stream, len(replayed))
        assert [e.seq for e in first] == replayed
        with agent.profile(world.profiles[2]) as lease:
            live = stream.get(timeout=20)
        assert (live.type, live.assignment_id, live.agent_id, live.profile_id) == (
            "assignment.created", lease.assignment_id, agent.agent_id, world.profiles[2])
        assert live.pool == world.pool and live.to_status == "active"


def test_a_cut_connection_resumes_from_the_last_seq_with_no_gap_and_no_duplicate(world):
    ops = world.ops()
    agent = world.agent()
    start = ops.events_page(since=0, limit=1)["last_seq"]  # anything before this test is not ours
    start = _log_end(ops, start)

    with ops.events(since=start, pool=world.pool) as stream:
        _take_and_release(agent, world.profiles[:2])
        got = _collect(stream, 4)  # two takes, two releases
        # The network goes away under the socket: the stream must notice and reconnect from its seq.
        stream.connection.socket.shutdown(socket.SHUT_RDWR)
        _take_and_release(agent, world.profiles[2:4])  # while it is down
        got += _collect(stream, 4)
        _take_and_release(agent, world.profiles[:1])  # after it is back
        got += _collect(stream, 2)
        assert stream.get(timeout=1.5) is None  # and nothing more, no repeat

    assert stream.reconnects >= 1
    seqs = [e.seq for e in got]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    assert seqs == _log(ops, start, world.pool), "the stream and the log disagree"
    assert [e.type for e in got] == ["assignment.created", "assignment.released"] * 5


def test_a_stream_with_a_bad_token_fails_with_not_authenticated(world):
    from tether_client import Client, NotAuthenticated

    with pytest.raises(NotAuthenticated):
        Client(world.url, token="bogus0token").events(since=0).get(timeout=10)


def test_polling_reads_the_same_log_when_no_websocket_is_used(world):
    ops = world.ops()
    agent = world.agent()
    start = _log_end(ops, 0)
    _take_and_release(agent, world.profiles[:1])

    with ops.events(since=start, pool=world.pool, use_websocket=False) as stream:
        stream.poll_interval = 0.2
        got = _collect(stream, 2)
    assert [e.type for e in got] == ["assignment.created", "assignment.released"]


def _log_end(ops, since):
    while True:
        page = ops.events_page(since=since, limit=1000)
        if not page["next"]:
            return page["last_seq"]
        since = page["last_seq"]
