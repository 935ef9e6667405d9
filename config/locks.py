"""Every lock Tether takes beyond a plain row lock, in one place: the PostgreSQL advisory lock keys
(so that no two collide), the pool-move lock, and row locks that return their related rows safely.

Lock order, kept by every service so that concurrent calls cannot deadlock:
a pool's move lock → agent rows (primary-key order) → task rows (queued ones SKIP LOCKED) →
profile rows (primary-key order) → assignment rows → the wait-graph lock → alert rows → the
event-order lock (taken last, inside COMMIT; see `assignments.events.recorded_transaction`).
The one exception, which cannot deadlock: a take that found the wait-graph lock held (asked for
without waiting) starts again with it right after its agent's row (`WAIT_GRAPH` below).
"""

from django.db import connection

from config.sql import from_row

# Taken (transaction-scoped) inside COMMIT by the trigger that numbers a transaction's event rows
# (migration assignments/0008), released by the end of the COMMIT: events therefore become visible
# to readers in `seq` order (invariant 4, see assignments/events.py).
EVENT_ORDER = 0x7E7E_0001
# Held (transaction-scoped) by every request that starts waiting for a profile, while it reads the
# wait-for graph and adds its edge (assignments/waits.py): two requests that would close a cycle
# together (A waits for B's profile while B asks for A's) are checked one after the other, so the
# second sees the first's edge and is refused. Asked for without waiting after every row lock of
# the request; a request that finds it held rolls back and takes it, waiting, right after its agent's
# row lock and before any profile's (so no release waits behind a request waiting for it).
WAIT_GRAPH = 0x7E7E_0002

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


def xact_lock(key: int) -> None:
    """Take a one-key advisory lock until the current transaction ends, waiting for it. (SQLite
    serialises write transactions anyway.)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def try_xact_lock(key: int) -> bool:
    """Take a one-key advisory lock until the current transaction ends, without waiting: False when
    another worker holds it (it is doing this job right now). SQLite has no advisory locks, but it
    serialises write transactions anyway, so there it is always True."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def pool_lock_moves(pool_id: int, *, shared: bool = False) -> None:
    """Serialise the moves of one pool's assignments until commit (`POOL_MOVES`). Must be taken
    before any agent row lock of that pool. Re-entrant within a transaction. `shared`: for a change
    that moves nothing but must be ordered against the pool's moves (a new agent joining: a failover
    choosing among the pool's agents either committed before it or sees it), so such changes do not
    wait for one another; never take it shared and then exclusive in one transaction (two such would
    deadlock). (SQLite serialises write transactions anyway.)"""
    if connection.vendor == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}(%s, %s)", [POOL_MOVES, pool_id])


# --- Row locks that return their related rows too, safely ------------------------------------------
#
# `select_for_update(of=("self",))` with `select_related` locks only the row itself in one query —
# but under READ COMMITTED, when the query had to wait for the lock and the other transaction changed
# a foreign key meanwhile, PostgreSQL re-checks the locked row's new version against the *old* joined
# rows: a nullable join comes back NULL (an assignment placed on an agent reads as agent None) and an
# inner join drops the row altogether (a profile whose pool changed reads as missing). Once the lock
# is held, a plain read sees the committed row; so when the joined rows do not match the locked
# row's foreign keys, or the row seems gone, it is read again — a second query only in that rare case.


def _mismatched(obj, related) -> bool:
    for name in related:
        field = obj._meta.get_field(name)
        fk_value = getattr(obj, field.attname)
        loaded = obj._state.fields_cache.get(name)
        if (fk_value is None) != (loaded is None) or (loaded is not None and loaded.pk != fk_value):
            return True
    return False


def lock_one(model, *, related: tuple[str, ...] = (), only: tuple[str, ...] = (), no_key: bool = False, **lookup):
    """Lock the one row matching `lookup` until commit and return it with `related` loaded
    (direct foreign keys only). Raises `model.DoesNotExist` when there is no such row.

    `only` narrows the columns read (as QuerySet.only, "relation__field" for related rows; the
    foreign keys of `related` are always read): hot paths name what they use, and anything else is
    read on first touch. `no_key`: FOR NO KEY UPDATE, which rows referencing this one (their
    foreign-key checks take KEY SHARE) do not wait for."""
    locking = model.objects.select_for_update(of=("self",), no_key=no_key)
    columns = (*only, *related) if only else ()

    def narrow(queryset):
        return queryset.only(*columns) if columns else queryset

    try:
        obj = narrow(locking.select_related(*related)).get(**lookup)
    except model.DoesNotExist:
        if not related:
            raise
        # Gone, or dropped by the join re-check: lock the row alone to tell which.
        pk = locking.filter(**lookup).values_list("pk", flat=True).first()
        if pk is None:
            raise
        return narrow(model.objects.select_related(*related)).get(pk=pk)
    if related and _mismatched(obj, related):
        return narrow(model.objects.select_related(*related)).get(pk=obj.pk)
    return obj


# --- The same lock as one named statement, for the hot paths ---------------------------------------
#
# `lock_one` compiles its query every call, and on the take path compiling cost more CPU than running
# (issue 15's profile). `lock_one_named` builds the statement once per (model, relation, columns,
# lookup) from the model's fields: the row and its one related row (LEFT JOIN), `FOR UPDATE OF` the
# row only. When the joined row does not match the locked row's foreign key (the READ COMMITTED
# re-check above), or on another database, it defers to `lock_one` — the row lock, if any, is held
# by then, so that reads the committed row.

_named_locks: dict[tuple, tuple[str, list, list]] = {}


def _named_lock_statement(model, related: str, only: tuple[str, ...] | None, lookup: str, no_key: bool = False):
    key = (model, related, only, lookup, no_key)
    built = _named_locks.get(key)
    if built is None:
        fk = model._meta.get_field(related)
        other = fk.related_model
        if only is None:  # every column of both, as lock_one without `only`
            own, theirs = list(model._meta.concrete_fields), list(other._meta.concrete_fields)
        else:
            own_names = {name for name in only if "__" not in name} | {model._meta.pk.name, related}
            own = [f for f in model._meta.concrete_fields if f.name in own_names]
            their_names = {name.split("__", 1)[1] for name in only if name.startswith(f"{related}__")} | {other._meta.pk.name}
            theirs = [f for f in other._meta.concrete_fields if f.name in their_names]
        where = model._meta.get_field(lookup).column
        sql = (
            f"SELECT {', '.join('t.' + f.column for f in own)}, {', '.join('r.' + f.column for f in theirs)} "
            f"FROM {model._meta.db_table} t LEFT JOIN {other._meta.db_table} r ON r.{other._meta.pk.column} = t.{fk.column} "
            f"WHERE t.{where} = %s FOR {'NO KEY UPDATE' if no_key else 'UPDATE'} OF t"
        )
        built = _named_locks[key] = (sql, own, theirs)
    return built


def lock_one_named(model, *, related: str, only: tuple[str, ...] | None, no_key: bool = False, **lookup):
    """`lock_one(model, related=(related,), only=only, no_key=no_key, **lookup)` (one lookup field),
    as one statement built once; `only=None`: every column of the row and of its related row.
    Raises `model.DoesNotExist` when there is no such row."""
    [(name, value)] = lookup.items()
    if connection.vendor != "postgresql":
        return lock_one(model, related=(related,), only=only or (), no_key=no_key, **lookup)
    sql, own, theirs = _named_lock_statement(model, related, None if only is None else tuple(only), name, no_key)
    with connection.cursor() as cursor:
        cursor.execute(sql, [value])
        row = cursor.fetchone()
    if row is None:
        raise model.DoesNotExist(f"no {model.__name__} with {name}={value!r}")
    fk = model._meta.get_field(related)
    mine, other_values = row[: len(own)], row[len(own):]
    obj = from_row(model, own, mine, using=connection.alias)
    fk_value = getattr(obj, fk.attname)
    if fk_value != other_values[[f.primary_key for f in theirs].index(True)]:
        # A stale join: read again, locked.
        return lock_one(model, related=(related,), only=only or (), no_key=no_key, **lookup)
    if fk_value is not None:
        setattr(obj, related, from_row(fk.related_model, theirs, other_values, using=connection.alias))
    return obj
