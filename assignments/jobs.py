"""The assignments app's sweeps, run on the beat by config/jobs.py: the idle and expiry sweep (the
zombie reaper), reconciliation of the live-assignment cache, hourly usage rollups and the archive of
old events. Each is idempotent, bounded by `limit`, safe on several workers at once, and makes its
changes through the services (`assignments.services`), each row in its own transaction."""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from assignments import cache as live_cache
from assignments.analytics import event_counts, holder_changes, holding_spans
from assignments.events import recorded_transaction
from assignments.models import Assignment, Event, EventArchive, UsageRollup
from assignments.services import assignment_expire, assignment_idle, assignment_release
from assignments.waits import wait_expire, waits_break_cycle, waits_serve_profile
from config import locks
from config.actors import Actor, require_operator
from pools.selectors import older_than_pool_timeout

S = Assignment.Status


def _expiry_due(now):
    """The three kinds of assignment the expiry sweep ends or idles, as one filter each, in the
    order the sweep handles them (expiry first: an assignment past its pool's timeout is reaped,
    not idled)."""
    idle_cutoff = now - timedelta(seconds=settings.TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS)
    grace_cutoff = now - timedelta(seconds=settings.TETHER_RELEASE_GRACE_SECONDS)
    # Counted from the last activity, active or idle: a pool's idle timeout means what it says
    # whatever TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS is (DESIGN.md, "Background jobs").
    expired = older_than_pool_timeout(
        Assignment.objects.filter(status__in=(S.ACTIVE, S.IDLE)),
        since_field="last_activity",
        timeout_field="assignment_idle_timeout_seconds",
        now=now,
    )
    active = Assignment.objects.filter(status=S.ACTIVE, last_activity__lt=idle_cutoff)
    releasing = Assignment.objects.filter(status=S.RELEASING, last_activity__lt=grace_cutoff)
    return {"expired": expired, "idled": active, "released": releasing}


def assignments_expire_idle(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """The idle and expiry sweep (the zombie reaper), at most `limit` assignments per kind:
    - active or idle with no activity for its pool's `assignment_idle_timeout_seconds` → expired
      (`assignment_expire`): reaped within that time plus one sweep interval;
    - active with no activity for TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS → idle (`assignment_idle`,
      which leaves `last_activity` alone, so the pool's timeout still counts from it);
    - releasing whose agent has not confirmed within TETHER_RELEASE_GRACE_SECONDS → released
      (`assignment_release`, reason force_released).
    Activity is what the holder does: a take, an update, a heartbeat that reports the assignment
    (one that no longer lists it renews nothing, so the timeout runs from the last that did).
    Each row is handled in its own transaction by the service that owns the change (its events).
    Idempotent; safe on several workers. Returns the counts."""
    require_operator(actor, "sweep assignments")
    now = now or timezone.now()
    due = _expiry_due(now)
    counts = {"idled": 0, "expired": 0, "released": 0}
    for kind, queryset in due.items():
        # One indexed query per kind ((status, last_activity)); nothing to do costs only these.
        for pk in list(queryset.order_by("last_activity").values_list("pk", flat=True)[:limit]):
            with recorded_transaction():
                # SKIP LOCKED and the same condition again, under the row lock: a row another worker
                # is handling is skipped, and one that moved on since the query above (its agent
                # reported activity, someone released it) is left alone.
                row = (
                    queryset.select_for_update(of=("self",), skip_locked=True)
                    .filter(pk=pk)
                    .values_list("assignment_id", flat=True)
                    .first()
                )
                if row is None:
                    continue
                if kind == "idled":
                    assignment_idle(assignment_id=row, actor=actor)
                elif kind == "expired":
                    assignment_expire(assignment_id=row, actor=actor, reason="idle timeout")
                else:
                    assignment_release(
                        assignment_id=row, actor=actor, reason=Assignment.ReleaseReason.FORCE_RELEASED
                    )
                counts[kind] += 1
    return counts


def _chunks(items, size):
    items = sorted(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def assignments_reconcile_cache(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Reconcile the cache of live assignments (assignments/cache.py) with the database, in chunks
    of `limit` keys: every profile that has a live assignment, and every key the cache has.
    - `missing`: a live assignment the cache does not have (lost while Redis was down) → stored;
    - `stale`: the cache says another holder, status or token, or a holder for a free profile →
      replaced by the truth.
    Runs alone (advisory lock JOB_RECONCILE_CACHE; a second worker returns `busy`); does nothing
    while the cache is unreachable. Idempotent: a second run finds no drift. Returns the counts."""
    require_operator(actor, "reconcile the cache")
    if not live_cache.cache_reachable():
        return {"cache_unavailable": True, "missing": 0, "stale": 0, "checked": 0}
    counts = {"checked": 0, "missing": 0, "stale": 0}
    with transaction.atomic():
        if not locks.try_xact_lock(locks.JOB_RECONCILE_CACHE):
            return {"busy": True} | counts
        live = Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES)
        profile_ids = set(live.values_list("profile__profile_id", flat=True))
        profile_ids |= {k[len(live_cache.PROFILE_PREFIX):] for k in live_cache.cached_keys(live_cache.PROFILE_PREFIX)}
        for chunk in _chunks(profile_ids, limit):
            # Deliberately not atomic with the commits it races: a change committed between the
            # truth's read and the write below can be overwritten by the older truth; its own
            # after-commit refresh usually lands later, and the next run repairs it otherwise.
            cached = live_cache.cache.get_many([live_cache.profile_key(i) for i in chunk])
            truth = live_cache.truth_for_profiles(chunk)
            counts["checked"] += len(truth)
            repairs = {}
            for key, want in truth.items():
                have = cached.get(key)
                if not isinstance(have, dict) or "a" not in have:
                    if want["a"] is not None:
                        counts["missing"] += 1
                        repairs[key] = want
                elif not live_cache.same(have["a"], want["a"]):
                    counts["stale"] += 1
                    repairs[key] = want
            if repairs:
                live_cache.cache_store(repairs)
    return counts


def _hour_floor(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


_ROLLUP_FIELDS = ("assignments", "busy_seconds", "conflicts", "failures", "expirations", "successes", "failovers",
                  "waits", "wait_seconds", "tasks_enqueued", "tasks_dequeued", "tasks_assigned", "task_wait_seconds",
                  "tasks_completed", "tasks_failed", "tasks_cancelled", "tasks_expired", "task_run_seconds")
_SECONDS_FIELDS = ("busy_seconds", "wait_seconds", "task_wait_seconds", "task_run_seconds")


def _rollup_hour(start, now) -> list[tuple]:
    """Usage rows (tuples of `_ROLLUP_COLUMNS`) of the hour starting at `start`, from the assignments held
    during it (split between agents by their reassignments: `assignments.analytics.holding_spans`)
    and the events that happened in it."""
    end = start + timedelta(hours=1)
    Scope = UsageRollup.Scope
    stats = defaultdict(lambda: dict.fromkeys(_ROLLUP_FIELDS, 0))

    rows = list(
        Assignment.objects.filter(assigned_at__lt=end)
        .exclude(released_at__lte=start)
        .values_list("assignment_id", "profile__profile_id", "pool__name", "agent__agent_id", "status",
                     "assigned_at", "released_at", "wait_until")
    )
    # Failover and rebalancing move an assignment between agents (or leave it waiting, held by
    # nobody): its holder-changing events split its time between the agents that held it. A request
    # queued for a profile and never served (it keeps its `wait_until`) held nothing: all its time
    # is waiting (a served one counts from its hand-over; its wait is counted from the hand-over's event).
    changes = holder_changes([row[0] for row in rows], since=min((row[5] for row in rows), default=start), until=end)
    for assignment_id, profile_id, pool_name, agent_id, status, assigned_at, released_at, wait_until in rows:
        for span in holding_spans(agent_id=agent_id, status=status, assigned_at=assigned_at, released_at=released_at,
                                  changes=changes.get(assignment_id, []), now=now, never_held=wait_until is not None):
            seconds = span.seconds_within(start, end)
            if seconds <= 0:
                continue
            if span.agent_id is None:  # waiting for an agent (or for the profile) is not busy time
                for scope, key in ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name)):
                    stats[(scope, key)]["wait_seconds"] += seconds
                continue
            for scope, key in ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, span.agent_id)):
                stats[(scope, key)]["busy_seconds"] += seconds

    event_counts(start, end, stats)
    _rollup_task_times(start, end, stats)
    return [
        (start, scope, key, now) + tuple(round(values[f], 3) if f in _SECONDS_FIELDS else values[f] for f in _ROLLUP_FIELDS)
        for (scope, key), values in stats.items()
    ]


# The columns of the rows `_rollup_hour` returns (plain tuples: 10,000 live assignments make
# ~11,000 rows an hour, and model instances cost more than the rest of the job).
_ROLLUP_COLUMNS = ("hour", "scope", "key", "computed_at") + _ROLLUP_FIELDS


def _rollups_write(rows: list[tuple]) -> None:
    """Insert the rollup rows. On PostgreSQL with COPY: a live fleet makes one row per held profile
    per hour, and profiling the job with 10,000 live assignments showed bulk_create's per-value
    preparation (22 columns × ~11,000 rows an hour) costing most of the run; COPY sends plain rows."""
    if connection.vendor != "postgresql":
        UsageRollup.objects.bulk_create(
            (UsageRollup(**dict(zip(_ROLLUP_COLUMNS, row, strict=True))) for row in rows), batch_size=1000)
        return
    table = UsageRollup._meta.db_table
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({', '.join(_ROLLUP_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _rollup_task_times(start, end, stats) -> None:
    """Waits of the tasks assigned in the hour (since they last entered the queue) and run times of
    those that ended in it (since they started, or were assigned), from their `task.*` events."""
    Scope = UsageRollup.Scope
    ending = list(
        Event.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .filter(models.Q(type="task.assigned") | models.Q(type__in=["task.completed", "task.failed"]))
        .exclude(task_id="")
        .values_list("task_id", "type", "to_status", "occurred_at", "pool", "agent_id", "seq")
    )
    if not ending:
        return
    task_ids = sorted({row[0] for row in ending})
    history = defaultdict(list)
    for offset in range(0, len(task_ids), 500):
        for task_id, type_, to_status, at, seq in (
            Event.objects.filter(task_id__in=task_ids[offset:offset + 500], occurred_at__lt=end)
            .filter(models.Q(to_status="queued") | models.Q(type__in=["task.assigned", "task.started"]))
            .order_by("seq").values_list("task_id", "type", "to_status", "occurred_at", "seq")
        ):
            history[task_id].append((seq, type_, to_status, at))
    for task_id, type_, to_status, at, pool_name, agent_id, seq in ending:
        earlier = [h for h in history.get(task_id, []) if h[0] < seq]
        if type_ == "task.assigned":
            entered = next((h[3] for h in reversed(earlier) if h[2] == "queued"), None)
            if entered is not None and pool_name:
                stats[(Scope.POOL, pool_name)]["tasks_assigned"] += 1
                stats[(Scope.POOL, pool_name)]["task_wait_seconds"] += max((at - entered).total_seconds(), 0.0)
            continue
        if type_ == "task.failed" and to_status != "failed":
            continue  # failed with retry: back in the queue, not an end
        started = next((h[3] for h in reversed(earlier) if h[1] == "task.started"), None)
        started = started or next((h[3] for h in reversed(earlier) if h[1] == "task.assigned"), None)
        if started is None:
            continue
        for scope, key in ((Scope.POOL, pool_name), (Scope.AGENT, agent_id)):
            if key:
                stats[(scope, key)]["task_run_seconds"] += max((at - started).total_seconds(), 0.0)


def usage_rollup_recent(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Roll up usage per hour and per profile, agent and pool (assignments, busy seconds, conflicts,
    failures, expirations) for the current hour and the TETHER_ROLLUP_HOURS_BACK before it. Each
    covered hour's rows are replaced, so running twice gives the same rows. Runs alone (advisory lock
    JOB_ROLLUP; a second worker returns `busy`). Returns the counts."""
    require_operator(actor, "roll up usage")
    now = now or timezone.now()
    current = _hour_floor(now)
    hours = [current - timedelta(hours=i) for i in range(settings.TETHER_ROLLUP_HOURS_BACK, -1, -1)]
    written = 0
    with transaction.atomic():
        if not locks.try_xact_lock(locks.JOB_ROLLUP):
            return {"busy": True, "hours": 0, "rows": 0}
        for hour in hours:
            rows = _rollup_hour(hour, now)
            UsageRollup.objects.filter(hour=hour).delete()
            _rollups_write(rows)
            written += len(rows)
    return {"hours": len(hours), "rows": written}


_ARCHIVE_BATCHES_PER_RUN = 10


def events_archive_old(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Move events older than TETHER_EVENT_RETENTION_DAYS from the event log to EventArchive (same
    seq and columns): oldest first, `limit` per transaction, at most 10 transactions a run. The log
    is append-only for everyone else (`Event.delete()` refuses); this bulk move is the one sanctioned
    removal, and nothing is dropped — each batch is inserted into the archive in the same transaction
    that deletes it. Runs alone (advisory lock JOB_ARCHIVE). Idempotent. Returns the counts."""
    require_operator(actor, "archive events")
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.TETHER_EVENT_RETENTION_DAYS)
    columns = [f.attname for f in EventArchive._meta.concrete_fields if f.attname != "archived_at"]
    archived = 0
    for _ in range(_ARCHIVE_BATCHES_PER_RUN):
        with transaction.atomic():
            if not locks.try_xact_lock(locks.JOB_ARCHIVE):
                return {"busy": True, "archived": archived}
            batch = list(Event.objects.filter(occurred_at__lt=cutoff).order_by("seq").values(*columns)[:limit])
            if not batch:
                break
            EventArchive.objects.bulk_create(
                [EventArchive(archived_at=now, **row) for row in batch], ignore_conflicts=True
            )
            # A queryset delete: one DELETE of exactly the rows just copied (Event.delete() refuses
            # single rows by design; this is the archive's sanctioned bulk move).
            Event.objects.filter(seq__in=[row["seq"] for row in batch]).delete()
            archived += len(batch)
        if len(batch) < limit:
            break
    return {"archived": archived}


def waits_sweep(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """The queued requests' sweep (assignments/waits.py), at most `limit` of each kind:
    - a request past its `wait_until` → expired, reason "wait timeout" (`wait_expire`);
    - a free profile with requests queued for it → handed to the next one (`waits_serve_profile`):
      the pool's cooldown ended, a new UTC day reset its quota, or the request next in line was
      busy when the profile was released.
    Each in its own transaction; idempotent, safe on several workers (rows another worker holds are
    skipped). One indexed query per kind when there is nothing to do. Returns the counts."""
    require_operator(actor, "sweep waiting requests")
    now = now or timezone.now()
    counts = {"expired": 0, "handed_over": 0}
    due = list(
        Assignment.objects.queued().filter(wait_until__lte=now)
        .order_by("wait_until").values_list("assignment_id", flat=True)[:limit]
    )
    for assignment_id in due:
        if wait_expire(assignment_id=assignment_id, actor=actor, reason="wait timeout") is not None:
            counts["expired"] += 1
    free = list(
        Assignment.objects.queued().filter(wait_until__gt=now)
        .exclude(profile_id__in=Assignment.objects.holding().values("profile_id"))
        .values_list("profile_id", flat=True).distinct().order_by("profile_id")[:limit]
    )
    for profile_pk in free:
        if waits_serve_profile(profile_pk=profile_pk, actor=actor) is not None:
            counts["handed_over"] += 1
    return counts


def wait_cycles_break(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Break the cycles of waiting requests that formed without a refused request (a hand-over or a
    failover made a waiting agent the holder of what another waits for): each by expiring its
    youngest request (reason "deadlock", with a `deadlock` alert), at most `limit` per run.
    Idempotent: two workers breaking the same cycle expire the same request once. Returns the counts."""
    require_operator(actor, "break wait cycles")
    broken = 0
    for _ in range(limit):
        if waits_break_cycle(actor=actor) is None:
            break
        broken += 1
    return {"cycles_broken": broken}

