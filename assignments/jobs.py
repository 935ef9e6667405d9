"""The assignments app's sweeps, run on the beat by config/jobs.py: the idle and expiry sweep (the
zombie reaper), reconciliation of the live-assignment cache, hourly usage rollups and the archive of
old events. Each is idempotent, bounded by `limit`, safe on several workers at once, and makes its
changes through the services (`assignments.services`), each row in its own transaction."""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from assignments import cache as live_cache
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
    of `limit` keys: every profile and agent that holds something, and every key the cache has.
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
        agent_ids = set(live.filter(agent__isnull=False).values_list("agent__agent_id", flat=True))
        agent_ids |= {k[len(live_cache.AGENT_PREFIX):] for k in live_cache.cached_keys(live_cache.AGENT_PREFIX)}
        for ids, key_of, truth_of in (
            (profile_ids, live_cache.profile_key, live_cache.truth_for_profiles),
            (agent_ids, live_cache.agent_key, live_cache.truth_for_agents),
        ):
            for chunk in _chunks(ids, limit):
                # Deliberately not atomic with the commits it races: a change committed between the
                # truth's read and the write below can be overwritten by the older truth; its own
                # after-commit refresh usually lands later, and the next run repairs it otherwise.
                cached = live_cache.cache.get_many([key_of(i) for i in chunk])
                truth = truth_of(chunk)
                counts["checked"] += len(truth)
                repairs = {}
                for key, want in truth.items():
                    have = cached.get(key)
                    if not isinstance(have, dict) or "a" not in have:
                        if want["a"] not in (None, []):
                            counts["missing"] += 1
                            repairs[key] = want
                    elif not _same_entry(have["a"], want["a"], live_cache):
                        counts["stale"] += 1
                        repairs[key] = want
                if repairs:
                    live_cache.cache_store(repairs)
    return counts


def _same_entry(have, want, live_cache) -> bool:
    if isinstance(want, list) or isinstance(have, list):
        if not (isinstance(want, list) and isinstance(have, list)) or len(have) != len(want):
            return False
        by_id = {item.get("assignment_id"): item for item in have if isinstance(item, dict)}
        return all(live_cache.same(by_id.get(item["assignment_id"]), item) for item in want)
    return live_cache.same(have, want)


def _hour_floor(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def _rollup_hour(start, now) -> list:
    """Usage rows (UsageRollup, unsaved) of the hour starting at `start`, from the assignments held
    during it (split between agents by their reassignments) and the events that happened in it."""
    end = start + timedelta(hours=1)
    Scope = UsageRollup.Scope
    stats = defaultdict(lambda: {"assignments": 0, "busy_seconds": 0.0, "conflicts": 0, "failures": 0, "expirations": 0})

    rows = list(
        Assignment.objects.filter(assigned_at__lt=end)
        .exclude(released_at__lte=start)
        .filter(wait_until__isnull=True)  # a request never served held nothing (a served one counts from its hand-over)
        .values_list("assignment_id", "profile__profile_id", "pool__name", "agent__agent_id", "assigned_at", "released_at")
    )
    # Failover and rebalancing move an assignment between agents (or leave it waiting, held by
    # nobody): its `assignment.reassigned` events split its time between the agents that held it.
    moves = defaultdict(list)
    ids = [row[0] for row in rows]
    for offset in range(0, len(ids), 500):
        for assignment_id, at, from_agent, to_agent in (
            Event.objects.filter(type=Event.Type.ASSIGNMENT_REASSIGNED, assignment_id__in=ids[offset:offset + 500])
            .order_by("seq")
            .values_list("assignment_id", "occurred_at", "data__from_agent_id", "data__to_agent_id")
        ):
            moves[assignment_id].append((at, from_agent, to_agent))
    for assignment_id, profile_id, pool_name, agent_id, assigned_at, released_at in rows:
        history = moves.get(assignment_id, [])
        holder, since = (history[0][1] if history else agent_id), assigned_at
        spans = []
        for at, _from_agent, to_agent in history:
            spans.append((holder, since, at))
            holder, since = to_agent, at
        spans.append((holder, since, min(released_at or now, now)))
        for holder, held_from, held_to in spans:
            busy = (min(held_to, end) - max(held_from, start)).total_seconds()
            if holder is None or busy <= 0:
                continue  # waiting for an agent is not busy time
            for scope, key in ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, holder)):
                stats[(scope, key)]["busy_seconds"] += busy

    counted = (
        Event.objects.filter(occurred_at__gte=start, occurred_at__lt=end, type__in=[
            Event.Type.ASSIGNMENT_CREATED, Event.Type.ASSIGNMENT_REASSIGNED, Event.Type.ASSIGNMENT_CONFLICT,
            Event.Type.ASSIGNMENT_EXPIRED, Event.Type.ASSIGNMENT_STATUS_CHANGED,
        ])
        .values_list("type", "from_status", "to_status", "profile_id", "agent_id", "pool")
        .annotate(n=models.Count("seq"))
        .order_by()
    )
    for type_, from_status, to_status, profile_id, agent_id, pool_name, n in counted:
        if type_ == Event.Type.ASSIGNMENT_CREATED and to_status == S.PENDING:
            continue  # a request queued for a profile (assignments/waits.py), not an assignment yet
        if type_ == Event.Type.ASSIGNMENT_EXPIRED and from_status == S.PENDING and agent_id:
            continue  # a wait that ran out (or was broken out of a cycle): nothing held expired
        if type_ == Event.Type.ASSIGNMENT_STATUS_CHANGED and (from_status, to_status) == (S.PENDING, S.ACTIVE):
            # A queued request handed the profile: an assignment made then.
            what, scopes = "assignments", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif type_ == Event.Type.ASSIGNMENT_CREATED:
            what, scopes = "assignments", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif type_ == Event.Type.ASSIGNMENT_REASSIGNED:
            if to_status != S.ACTIVE:
                continue
            what, scopes = "assignments", ((Scope.AGENT, agent_id),)  # handed to it by failover or rebalancing
        elif type_ == Event.Type.ASSIGNMENT_CONFLICT:
            what, scopes = "conflicts", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif type_ == Event.Type.ASSIGNMENT_EXPIRED:
            what, scopes = "expirations", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif to_status == S.FAILED:
            what, scopes = "failures", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        else:
            continue
        for scope, key in scopes:
            if key:
                stats[(scope, key)][what] += n

    return [
        UsageRollup(hour=start, scope=scope, key=key, computed_at=now,
                    **(values | {"busy_seconds": round(values["busy_seconds"], 3)}))
        for (scope, key), values in stats.items()
    ]


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
            UsageRollup.objects.bulk_create(rows, batch_size=1000)
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

