"""Writing the event log: every service records its events through `event_record`, inside
`recorded_transaction`, so that the event rows commit (or roll back) with the change they describe.

Why the events are buffered and written at the end of the transaction, under a lock:
invariant 4 promises a subscriber that reconnects with `since=N` every event with `seq > N`. If two
transactions took seq 10 and 11 and 11 committed first, a reader could see 11, move its cursor past
10, and never see 10. So on PostgreSQL the rows are inserted under a transaction-scoped advisory lock
(`config.locks.EVENT_ORDER`) that is released only by the commit: whoever takes a later seq commits
later, and readers always see a gap-free prefix of the log. The lock is taken last, after every row
lock the service needed, and held only for the insert and the commit — so it cannot deadlock with row
locks, and it serialises only the commit tail. (SQLite serialises whole write transactions anyway.)

Do not call several services inside one outer `transaction.atomic()` and then go on taking row
locks: the event lock would then be held across them.

After commit, each committed batch goes to the event consumers declared in settings
(`TETHER_EVENT_CONSUMERS`, as NetBox's EVENTS_PIPELINE): the live-assignment cache, the publisher to
live subscribers, the "room was freed: rebalance" trigger. That list is how a lower layer (this log)
reaches higher ones (the dashboard, the pools) without importing them.
"""

import logging
import threading
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction
from django.utils.module_loading import import_string

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
    try:
        with transaction.atomic():
            yield
            stack.pop()
            _flush(buffer)
    finally:
        if stack and stack[-1] is buffer:
            stack.pop()


def _flush(buffer: list[Event]) -> None:
    if not buffer:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Released by COMMIT/ROLLBACK: makes events visible in seq order (see module docstring).
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [locks.EVENT_ORDER])
    events = Event.objects.bulk_create(buffer)
    payloads = [event_payload(event) for event in events]
    transaction.on_commit(lambda: events_committed(payloads))


def events_committed(payloads: list[dict]) -> None:
    """Hand one committed batch to every declared consumer, in the order declared (the cache before
    the publisher, so a subscriber that reads after hearing an event reads the new state). Each
    consumer is looked up when called (a test may replace one) and is best-effort: the change has
    committed, so a failing consumer is logged and the others still run; each one has its own way
    to catch up (reconciliation, a subscriber's replay from `since`, the rebalance sweep)."""
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
