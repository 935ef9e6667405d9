"""Invariant 4 under the interleavings that break naive logs: two transactions take seq 10 and 11,
and the one with 10 is still open when the other wants to commit; and many writers at once.

The mechanism (assignments/events.py, docs/events.md): an event row is numbered during its
transaction's COMMIT, by a deferred trigger that takes a transaction-scoped advisory lock only the end
of the COMMIT releases, so seqs are given in commit order and a reader never sees 11 while 10 is
still to come. A transaction that has inserted its events but not begun to commit holds nobody up.
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

    # T1 inserts its event, has it numbered (takes the next seq and the event-order lock, as the
    # COMMIT's trigger does) and then stays open: the moment between numbering and visibility.
    first_inserted, release_first = threading.Event(), threading.Event()
    taken = {}
    real_flush = assignments.events._flush

    def flush_then_hold(buffer, **kwargs):
        real_flush(buffer, **kwargs)
        if threading.current_thread().name == "T1":
            with connections["default"].cursor() as cursor:
                cursor.execute("SET CONSTRAINTS assignments_event_number IMMEDIATE")  # the trigger runs now
                cursor.execute("SELECT seq FROM assignments_event WHERE profile_id = 'order-T1'")
                taken["T1"] = cursor.fetchone()[0]
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


def _naive_seq() -> int:
    """A number taken when the row is inserted, as a plain autoincrement would (no ordering at all)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT nextval('assignments_event_seq_committed')")
        return cursor.fetchone()[0]


def test_without_the_commit_order_lock_a_reader_would_see_11_before_10():
    """The hazard the mechanism exists for, shown with rows numbered at insert time (no event lock;
    a positive seq bypasses the commit-time numbering): a reader sees the later seq while the earlier
    is still uncommitted, and a cursor taken there would skip it."""
    start = last_seq()
    t1_inserted, release_t1 = threading.Event(), threading.Event()
    seqs = {}

    def plain_insert(name, hold):
        with transaction.atomic():
            seqs[name] = Event.objects.create(seq=_naive_seq(), type="test.plain", actor="test", profile_id=name).seq
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


async def test_an_open_transaction_that_has_not_begun_to_commit_holds_no_writer_up(headers, monkeypatch):
    """T1 has inserted its event and is still doing its own work (not yet committing): T2 records and
    commits meanwhile, and takes the earlier number. T1's event is numbered when T1 commits, after
    T2's; no reader ever sees a gap, and subscribers get both once, in seq order."""
    start = await database_sync_to_async(last_seq)()
    subscriber = await ws_connect(f"/assignments/events?since={start}", headers=headers)
    reader = Snapshots(start)
    reader.start()
    first_inserted, release_first = threading.Event(), threading.Event()
    real_flush = assignments.events._flush

    def flush_then_hold(buffer, **kwargs):
        real_flush(buffer, **kwargs)
        if threading.current_thread().name == "T1":
            first_inserted.set()
            release_first.wait(10)

    monkeypatch.setattr(assignments.events, "_flush", flush_then_hold)

    def record(name):
        with recorded_transaction():
            event_record(Event.Type.PROFILE_UPDATED, actor=OPERATOR, profile_id=f"open-{name}")

    t1 = _in_thread(lambda: record("T1"), name="T1")
    await _wait(first_inserted)
    t2 = _in_thread(lambda: record("T2"))
    await asyncio.get_running_loop().run_in_executor(None, t2.join, 10)
    assert not t2.is_alive(), "the later transaction waited for one that had not begun to commit"
    after_t2 = await database_sync_to_async(lambda: [(e.seq, e.profile_id) for e in event_list(since=start)])()
    assert [p for _, p in after_t2] == ["open-T2"]
    release_first.set()
    await asyncio.get_running_loop().run_in_executor(None, t1.join, 10)
    reader.stop.set()
    reader.join(5)

    final = await database_sync_to_async(lambda: [(e.seq, e.profile_id) for e in event_list(since=start)])()
    assert [p for _, p in final] == ["open-T2", "open-T1"]
    s_t2, s_t1 = (s for s, _ in final)
    assert s_t1 == s_t2 + 1  # numbered at commit: T1's wait took no number from anyone
    assert all(snapshot in ([], [s_t2], [s_t2, s_t1]) for snapshot in reader.seen), reader.seen
    assert [e["seq"] for e in await receive_events(subscriber, 2)] == [s_t2, s_t1]
    assert await nothing_more(subscriber)
    await subscriber.disconnect()


def test_many_concurrent_writers_a_polling_reader_gets_every_event_once_in_order():
    """Eight writers on their own connections commit 1-3 events per transaction as fast as they can
    (some transactions fail and roll back); a reader polls `since=<its last seq>` all along, as a
    reconnecting subscriber does. It must end with exactly the committed events, each once, in seq
    order, and never see a seq it would later find a smaller one before (a gap filled behind it)."""
    start = last_seq()
    writers, per_writer = 8, 40
    committed, lock, stop = [], threading.Lock(), threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def write(w):
        for i in range(per_writer):
            n = 1 + (w + i) % 3
            names = [f"many-{w}-{i}-{k}" for k in range(n)]
            try:
                with recorded_transaction():
                    for name in names:
                        event_record(Event.Type.PROFILE_UPDATED, actor=OPERATOR, profile_id=name)
                    if i % 7 == 3:
                        raise RuntimeError("roll back")
            except RuntimeError:
                continue
            with lock:
                committed.extend(names)

    def read():
        cursor = start
        try:
            while True:
                finished = stop.is_set()
                batch = event_list(since=cursor, limit=500)
                for event in batch:
                    if event.seq <= cursor:
                        problems.append(f"seq {event.seq} after cursor {cursor}")
                    seen.append(event.seq)
                    cursor = event.seq
                if finished and not batch:
                    return
        finally:
            connections.close_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    threads = [_in_thread(lambda w=w: write(w)) for w in range(writers)]
    for t in threads:
        t.join(120)
    stop.set()
    reader.join(30)
    assert not reader.is_alive() and not problems, problems

    final = event_list(since=start, limit=10_000)
    assert sorted(e.profile_id for e in final) == sorted(committed)
    assert seen == [e.seq for e in final]  # every committed event once, in seq order
    # Numbered at commit, only rows that commit take a number: the log has no holes at all.
    assert seen == list(range(seen[0], seen[0] + len(committed)))


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
