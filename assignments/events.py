"""Writing the event log: every service records its events through `event_record`, inside
`recorded_transaction`, so that the event rows commit (or roll back) with the change they describe.

Why `seq` is given at COMMIT, inside the database: invariant 4 promises a subscriber that
reconnects with `since=N` every event with `seq > N`. If two transactions took seq 10 and 11 and 11
committed first, a reader could see 11, move its cursor past 10, and never see 10. So on PostgreSQL
an event row is inserted with a provisional negative `seq`, and a deferred constraint trigger
(migration assignments/0008) that PostgreSQL runs during COMMIT takes the event-order lock
(`config.locks.EVENT_ORDER`) and numbers the transaction's rows; COMMIT releases the lock once the
transaction is visible. Numbers therefore follow commit order and readers always see a gap-free
prefix of the log, while the lock is held only for the database's own commit work: no writer waits
on another writer's Python thread (issue 15; the measurement is in the commit that made it so). The
numbers given are read back after COMMIT (`currval` of the sequence, on the same connection: the
trigger drew them consecutively under the lock, in insertion order) for the consumers below.

When a `recorded_transaction` runs inside a transaction someone else opened (a test's, a job's
outer `atomic()`), the commit is not ours to see, so the rows are numbered at once, under the
event-order lock taken then (`_NUMBER_NOW_SQL`), which is held until that outer COMMIT, as before.
Do not call several services inside one outer `transaction.atomic()` and go on taking row locks: the
event lock would be held across them. (SQLite serialises whole write transactions, so there the
plain autoincrement already follows commit order.)

After commit, each committed batch refreshes the live-assignment cache (assignments/cache.py: its
entries are read in the statement that reads the numbers), then goes to the event consumers declared
in settings (`TETHER_EVENT_CONSUMERS`, as NetBox's EVENTS_PIPELINE): the publisher to live
subscribers, the "room was freed: rebalance" trigger, the task dispatcher, the alert webhook. That
list is how a lower layer (this log) reaches higher ones (the dashboard, the pools) without
importing them.
"""

import logging
import threading
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction
from django.utils.module_loading import import_string

from assignments import cache as live_cache
from assignments.models import Event
from config import locks

log = logging.getLogger(__name__)
_local = threading.local()


def _stack() -> list[list[Event]]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


@contextmanager
def recorded_transaction():
    """`transaction.atomic()` that writes the events recorded inside it just before it commits.

    Nested use joins the outer transaction (as a savepoint): events recorded in a nested block that
    rolls back are dropped with it.
    """
    stack = _stack()
    if stack:
        buffer = stack[-1]
        mark = len(buffer)
        try:
            with transaction.atomic():
                yield
        except BaseException:
            del buffer[mark:]
            raise
        return

    buffer: list[Event] = []
    stack.append(buffer)
    # Ours when no transaction is open yet: then the rows are numbered by the COMMIT we issue.
    numbered_at_commit = connection.vendor == "postgresql" and not connection.in_atomic_block
    try:
        with transaction.atomic():
            yield
            stack.pop()
            _flush(buffer, numbered_at_commit=numbered_at_commit)
    finally:
        if stack and stack[-1] is buffer:
            stack.pop()


# The trigger's sequence (migration assignments/0008), read back after it numbered our rows.
_LAST_NUMBER_SQL = "SELECT currval('assignments_event_seq_committed')"
# Inside someone else's transaction: take the event-order lock now and draw the numbers at once
# (one statement; the lock function runs before the first nextval). Rows inserted with a positive
# seq are left alone by the trigger.
_NUMBER_NOW_SQL = (
    "SELECT nextval('assignments_event_seq_committed') FROM "
    "(SELECT pg_advisory_xact_lock(%s)) AS event_order, generate_series(1, %s)"
)


def _flush(buffer: list[Event], *, numbered_at_commit: bool = False) -> None:
    if not buffer:
        return
    if connection.vendor != "postgresql":
        events = Event.objects.bulk_create(buffer)
        payloads = [event_payload(event) for event in events]
        transaction.on_commit(lambda: events_committed(payloads))
        return
    if numbered_at_commit:
        _insert_unnumbered(buffer)
        transaction.on_commit(lambda: _numbered_then_committed(buffer))
        return
    # Inside a transaction opened by someone else: number the rows now (the lock is then held
    # until that transaction commits, see the module docstring).
    with connection.cursor() as cursor:
        cursor.execute(_NUMBER_NOW_SQL, [locks.EVENT_ORDER, len(buffer)])
        numbers = sorted(row[0] for row in cursor.fetchall())
    for event, seq in zip(buffer, numbers, strict=True):
        event.seq = seq
    events = Event.objects.bulk_create(buffer)
    payloads = [event_payload(event) for event in events]
    transaction.on_commit(lambda: events_committed(payloads))


# Every write's event rows, as one named statement (compiling the ORM's bulk insert cost more CPU than
# running it, issue 15). No RETURNING: the rows get their seq from the trigger at COMMIT (`_numbered`).
_EVENT_COLUMNS = [f for f in Event._meta.concrete_fields if not f.primary_key]
_INSERT_EVENTS_SQL = (
    f"INSERT INTO {Event._meta.db_table} ({', '.join(f.column for f in _EVENT_COLUMNS)}) VALUES "
)
_EVENT_ROW = "(" + ", ".join(["%s"] * len(_EVENT_COLUMNS)) + ")"


def _insert_unnumbered(events: list[Event]) -> None:
    # Values prepared as the ORM's insert prepares them (config/sql.py does the same for one row).
    params = [f.get_db_prep_save(f.pre_save(event, add=True), connection) for event in events for f in _EVENT_COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENTS_SQL + ", ".join([_EVENT_ROW] * len(events)), params)


def _numbered_then_committed(events: list[Event]) -> None:
    try:
        payloads, cache_entries = _numbered(events)
    except Exception:  # noqa: BLE001 — committed already: never turn that into an error reply
        # (The connection died just after COMMIT.) Each consumer has its own way to catch up: the
        # reconcile job, a subscriber's replay from its last seq, the rebalance sweep.
        log.warning("could not read the numbers of %d committed events; consumers skipped", len(events), exc_info=True)
        return
    events_committed(payloads, cache_entries=cache_entries)


def _numbered(events: list[Event]) -> tuple[list[dict], dict | None]:
    """Give the inserted events the numbers the trigger drew for them; return their payloads and the
    live-assignment cache's new entries for the profiles they touched. The trigger drew the numbers
    one after another under the event-order lock, in insertion order, on this connection: the last
    is the sequence's `currval` here, read in the same statement as the profiles' holders (the
    cache's refresh: one round trip for both, on every write). (This needs the same database session
    before and after COMMIT, which Django's connections and its psycopg pool give; a transaction-
    pooling proxy such as PgBouncer's transaction mode would not.)"""
    profile_ids = live_cache.profiles_touched(events)
    if profile_ids:
        last, cache_entries = live_cache.numbers_and_holders(profile_ids)
    else:
        with connection.cursor() as cursor:
            cursor.execute(_LAST_NUMBER_SQL)
            last, cache_entries = cursor.fetchone()[0], None
    first = last - len(events) + 1
    for offset, event in enumerate(events):
        event.seq = first + offset
    return [event_payload(event) for event in events], cache_entries


def events_committed(payloads: list[dict], *, cache_entries: dict | None = None) -> None:
    """Refresh the live-assignment cache (this log's own read model: with `cache_entries` when they
    were read with the numbers, else read now), then hand the committed batch to every declared
    consumer, in the order declared — the cache first, so a subscriber that reads after hearing an
    event reads the new state. Each consumer is looked up when called (a test may replace one) and
    is best-effort: the change has committed, so a failing consumer is logged and the others still
    run; each one has its own way to catch up (reconciliation, a subscriber's replay from `since`,
    the rebalance sweep)."""
    live_cache.cache_refresh_for_events(payloads, cache_entries)
    for path in settings.TETHER_EVENT_CONSUMERS:
        try:
            import_string(path)(payloads)
        except Exception:  # noqa: BLE001 — see the docstring
            log.warning("event consumer %s failed on events %s..%s", path, payloads[0]["seq"], payloads[-1]["seq"],
                        exc_info=True)


def event_record(
    type: str,
    *,
    actor,
    assignment=None,
    agent=None,
    pool=None,
    profile=None,
    profile_id: str = "",
    agent_id: str = "",
    pool_name: str = "",
    task_id: str = "",
    from_status: str = "",
    to_status: str = "",
    data: dict | None = None,
) -> Event:
    """Record one event in the current `recorded_transaction`.

    The ids are taken from the objects given: an assignment names its profile, agent and pool
    (callers pass the related objects already loaded, so this costs no query); `agent`, `pool` and
    `profile` fill in what the assignment does not; plain `*_id` strings win over all of them.
    """
    stack = _stack()
    if not stack:
        raise RuntimeError("event_record() must be called inside recorded_transaction()")
    ids = {"profile": "", "agent": "", "pool": ""}
    assignment_id = None
    if assignment is not None:
        assignment_id = assignment.assignment_id
        ids["profile"] = assignment.profile.profile_id
        ids["agent"] = assignment.agent.agent_id if assignment.agent_id else ""
        ids["pool"] = assignment.pool.name
    if profile is not None:
        ids["profile"] = profile.profile_id
        if not ids["pool"] and profile.pool_id:
            ids["pool"] = profile.pool.name
    if agent is not None:
        ids["agent"] = ids["agent"] or agent.agent_id
        ids["pool"] = ids["pool"] or agent.pool.name
    if pool is not None:
        ids["pool"] = pool.name
    profile_id = profile_id or ids["profile"]
    agent_id = agent_id or ids["agent"]
    pool_name = pool_name or ids["pool"]
    event = Event(
        type=str(type),
        actor=str(actor),
        assignment_id=assignment_id,
        profile_id=profile_id,
        agent_id=agent_id,
        pool=pool_name,
        task_id=task_id,
        from_status=str(from_status or ""),
        to_status=str(to_status or ""),
        data=data or {},
    )
    stack[-1].append(event)
    return event


def event_payload(event: Event) -> dict:
    """The event as subscribers and the API see it (DESIGN.md, "Events and the WebSocket")."""
    return {
        "seq": event.seq,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "actor": event.actor,
        "assignment_id": str(event.assignment_id) if event.assignment_id else None,
        "profile_id": event.profile_id or None,
        "agent_id": event.agent_id or None,
        "pool": event.pool or None,
        "from_status": event.from_status or None,
        "to_status": event.to_status or None,
        "data": event.data,
    }
