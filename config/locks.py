"""Every PostgreSQL advisory lock key Tether takes, in one place, so that no two collide."""

# Held (transaction-scoped) while a transaction inserts its event rows, until it commits: events
# therefore become visible to readers in `seq` order (invariant 4, see assignments/events.py).
EVENT_ORDER = 0x7E7E_0001

# Two-key locks (class, object id): a different lock space from the one-key locks above.
# Held while a transaction moves assignments between a pool's agents (failover, rebalancing,
# stale marking, draining, deregistering), taken before any agent row lock: two agents of one pool
# lost at once would otherwise each hold their own row and wait for the other's.
POOL_MOVES = 0x7E7E

# Background jobs that must run alone (one-key, taken with `pg_try_advisory_xact_lock`: a second
# worker finding it held returns at once instead of queueing behind the first; see config/jobs.py).
JOB_RECONCILE_CACHE = 0x7E7E_0101
JOB_ROLLUP = 0x7E7E_0102
JOB_ARCHIVE = 0x7E7E_0103


def try_xact_lock(key: int) -> bool:
    """Take a one-key advisory lock until the current transaction ends, without waiting: False when
    another worker holds it (it is doing this job right now). SQLite has no advisory locks, but it
    serialises write transactions anyway, so there it is always True."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])
