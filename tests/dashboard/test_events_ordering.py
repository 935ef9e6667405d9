"""Invariant 4 under the interleaving that breaks naive logs: two transactions take seq 10 and 11,
and the one with 10 is still open when the other wants to commit.

The mechanism (assignments/events.py, docs/events.md): event rows are inserted at the end of their
transaction under a transaction-scoped advisory lock that only COMMIT/ROLLBACK releases, so seqs are
taken in commit order and a reader never sees 11 while 10 is still to come.
"""

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connections, transaction

import assignments.events
import dashboard.publish
from assignments.events import event_record, recorded_transaction
from assignments.models import Event
from assignments.selectors import event_list
from tests.dashboard.events_support import OPERATOR, last_seq, nothing_more, receive_events, session_cookie_for, ws_connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
async def headers():
    from django.contrib.auth import get_user_model

    user = await database_sync_to_async(get_user_model().objects.create_user)(username="ordering", password=None)
    return await database_sync_to_async(session_cookie_for)(user)


class Snapshots(threading.Thread):
    """A reader on its own connection that keeps reading the log, as a poller or a replay would."""

    def __init__(self, since):
        super().__init__(daemon=True)
        self.since, self.seen, self.stop = since, [], threading.Event()

    def run(self):
        try:
            while not self.stop.is_set():
                self.seen.append([e.seq for e in event_list(since=self.since, limit=100)])
                time.sleep(0.005)
        finally:
            connections.close_all()


def _in_thread(fn, name=None):
    def run():
        try:
            fn()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    return thread


async def _wait(event: threading.Event, timeout=10):
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout), "timed out"


async def test_later_transaction_cannot_commit_its_event_before_an_open_earlier_one(headers, monkeypatch):
    start = await database_sync_to_async(last_seq)()
    subscriber = await ws_connect(f"/assignments/events?since={start}", headers=headers)
    reader = Snapshots(start)
    reader.start()

    # T1 inserts its event (takes the next seq) and then stays open, before COMMIT.
    first_inserted, release_first = threading.Event(), threading.Event()
    taken = {}
    real_flush = assignments.events._flush

    def flush_then_hold(buffer):
        real_flush(buffer)
        if threading.current_thread().name == "T1":
            taken["T1"] = buffer[0].seq
            first_inserted.set()
            release_first.wait(10)

    monkeypatch.setattr(assignments.events, "_flush", flush_then_hold)

    def record(name):
        with recorded_transaction():
            event_record(Event.Type.PROFILE_UPDATED, actor=OPERATOR, profile_id=f"order-{name}")

    t1 = _in_thread(lambda: record("T1"), name="T1")
    await _wait(first_inserted)
    second_done = threading.Event()
    t2 = _in_thread(lambda: (record("T2"), second_done.set()))

    # T2 is blocked: it cannot take a seq, let alone commit one, while T1 is open.
    await asyncio.sleep(0.5)
    assert not second_done.is_set(), "the later transaction committed while the earlier one was open"
    assert await database_sync_to_async(lambda: event_list(since=start))() == []
    assert await nothing_more(subscriber, 0.1)

    release_first.set()
    for t in (t1, t2):
        await asyncio.get_running_loop().run_in_executor(None, t.join, 10)
    reader.stop.set()
    reader.join(5)

    final = await database_sync_to_async(lambda: [(e.seq, e.profile_id) for e in event_list(since=start)])()
    assert [p for _, p in final] == ["order-T1", "order-T2"]
    s10, s11 = (s for s, _ in final)
    assert s10 == taken["T1"] and s10 < s11
    # No reader ever saw the later event without the earlier one.
    assert all(snapshot in ([], [s10], [s10, s11]) for snapshot in reader.seen), reader.seen
    # The live subscriber gets both, in order, once; one reconnecting after the later loses nothing.
    assert [e["seq"] for e in await receive_events(subscriber, 2)] == [s10, s11]
    assert await nothing_more(subscriber)
    await subscriber.disconnect()
    again = await ws_connect(f"/assignments/events?since={s10}", headers=headers)
    assert [e["seq"] for e in await receive_events(again, 1)] == [s11]
    assert await nothing_more(again)
    await again.disconnect()


def test_without_the_commit_order_lock_a_reader_would_see_11_before_10():
    """The hazard the mechanism exists for, shown with plain inserts (no event lock): a reader sees
    the later seq while the earlier is still uncommitted, and a cursor taken there would skip it."""
    start = last_seq()
    t1_inserted, release_t1 = threading.Event(), threading.Event()
    seqs = {}

    def plain_insert(name, hold):
        with transaction.atomic():
            seqs[name] = Event.objects.create(type="test.plain", actor="test", profile_id=name).seq
            if hold:
                t1_inserted.set()
                release_t1.wait(10)

    t1 = _in_thread(lambda: plain_insert("T1", True))
    assert t1_inserted.wait(10)
    t2 = _in_thread(lambda: plain_insert("T2", False))
    t2.join(10)
    try:
        visible = [e.seq for e in event_list(since=start)]
        assert seqs["T1"] < seqs["T2"]
        assert visible == [seqs["T2"]]  # 11 is visible, 10 is not (yet)
    finally:
        release_t1.set()
        t1.join(10)
    assert [e.seq for e in event_list(since=start)] == [seqs["T1"], seqs["T2"]]


async def test_publishes_arriving_out_of_order_still_reach_the_subscriber_in_seq_order(headers, monkeypatch):
    """T1 commits seq 10 but its live message is delayed until T2's (seq 11) has been delivered, as
    with two web instances: the subscriber reads 10 from the log before sending 11, and drops the
    late message for 10."""
    subscriber = await ws_connect(headers=headers)
    t2_published = threading.Event()
    real_publish = dashboard.publish.publish_events

    def publish(payloads):
        if payloads[0]["profile_id"] == "late-T1":
            t2_published.wait(10)
            time.sleep(0.2)  # let the subscriber see 11 first
        real_publish(payloads)
        if payloads[0]["profile_id"] == "late-T2":
            t2_published.set()

    monkeypatch.setattr(dashboard.publish, "publish_events", publish)

    def record(name):
        with recorded_transaction():
            event_record(Event.Type.PROFILE_UPDATED, actor=OPERATOR, profile_id=f"late-{name}")

    seen_before = await database_sync_to_async(last_seq)()
    t1 = _in_thread(lambda: record("T1"))
    # T1's COMMIT happens before its publish (which now waits for T2's): wait for the row.
    for _ in range(200):
        if await database_sync_to_async(last_seq)() > seen_before:
            break
        await asyncio.sleep(0.01)
    t2 = _in_thread(lambda: record("T2"))
    for t in (t1, t2):
        await asyncio.get_running_loop().run_in_executor(None, t.join, 10)
    assert t2_published.is_set()
    received = await receive_events(subscriber, 2)
    assert [e["profile_id"] for e in received] == ["late-T1", "late-T2"]
    assert received[0]["seq"] < received[1]["seq"]
    assert await nothing_more(subscriber, 0.5)
    await subscriber.disconnect()
