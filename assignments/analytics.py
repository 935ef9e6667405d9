"""Analytics reads: who held what and for how long (the holding timeline), the seed's metrics
(`GET /api/assignments/metrics`), and the series and rankings of `/api/analytics/*`, read from the
hourly usage rollups (`UsageRollup`, written by `assignments.jobs.usage_rollup_recent`). No writes.

Definitions (the OpenAPI schema repeats them field by field):
- **held**: an agent is driving the profile — the assignment is active, idle or releasing. Time an
  assignment spends `pending` (waiting for an agent after a failover, or queued for the profile)
  is *waiting*, not held, and counts for nobody's busy time.
- **split after failover**: an assignment's `assignment.reassigned` events move it from agent to
  agent (or to nobody, while it waits); each agent is credited with the time it held it.
- **successful**: ended `released` by its own agent (release reason `released`). Force-released,
  cancelled and "agent lost while releasing" are neither successes nor failures.
- **failed**: ended `failed` or `expired`.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, FloatField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDay, TruncHour
from django.utils import timezone

from agents.models import Agent
from assignments.models import Alert, Assignment, Event, Profile, UsageRollup

S = Assignment.Status
HELD = set(Assignment.HELD_STATUSES)
R = Assignment.ReleaseReason

# Per-profile and per-agent maps in the metrics are capped: the busiest first.
METRICS_TOP = 100


# --- The holding timeline ---------------------------------------------------------------------------


@dataclass
class Span:
    """One stretch of an assignment's life: held by `agent_id`, or waiting (agent_id None)."""

    agent_id: str | None
    start: datetime
    end: datetime
    # How the stretch ended: "moved" (failover, rebalancing or drain took it elsewhere), "ended"
    # (the assignment ended), "open" (still going at the end of the timeline).
    ended_by: str = "open"

    def seconds_within(self, since: datetime, until: datetime) -> float:
        return max((min(self.end, until) - max(self.start, since)).total_seconds(), 0.0)


# The events that change who holds an assignment, besides its creation by a free take: moves
# (failover, rebalancing, drain), a pending assignment handed to its agent, and a creation as
# `pending` (a request queued for the profile). All rare next to takes and releases.
_HOLDER_Q = (
    Q(type=Event.Type.ASSIGNMENT_REASSIGNED)
    | Q(type=Event.Type.ASSIGNMENT_STATUS_CHANGED, from_status=S.PENDING)
    | Q(type=Event.Type.ASSIGNMENT_STATUS_CHANGED, to_status=S.PENDING)
    | Q(type=Event.Type.ASSIGNMENT_CREATED, to_status=S.PENDING)
)


def holder_changes(assignment_ids, *, since: datetime, until: datetime) -> dict:
    """assignment_id → its holder-changing events (`_HOLDER_Q`) that happened in [since, until),
    oldest first, as (at, type, agent_id, from_status, to_status, from_agent_id, to_agent_id); pass
    the earliest `assigned_at` of the assignments as `since`. One query over the rare event types in
    that time range (`occurred_at` index), not one per assignment: an assignment with none was held
    by its agent from creation to end."""
    wanted = set(assignment_ids)
    changes = defaultdict(list)
    if not wanted:
        return changes
    for row in (
        Event.objects.filter(_HOLDER_Q, occurred_at__gte=since, occurred_at__lt=until)
        .order_by("seq")
        .values_list("assignment_id", "occurred_at", "type", "agent_id", "from_status", "to_status",
                     "data__from_agent_id", "data__to_agent_id")
        .iterator(chunk_size=2000)
    ):
        if row[0] in wanted:
            changes[row[0]].append(row[1:])
    return changes


def holding_spans(*, agent_id, status, assigned_at, released_at, changes, now, never_held: bool = False) -> list[Span]:
    """The stretches of one assignment, from its holder-changing events (`holder_changes`), up to
    its end (or `now` while it lives). The first holder: nobody when it was created pending, else
    the first move's source, else its current agent (created by a take, never moved)."""
    if never_held:  # a request queued for a profile and never served: it only ever waited
        end = min(released_at or now, now)
        return [Span(None, assigned_at, max(end, assigned_at), "ended" if released_at and released_at <= now else "open")]
    created = next((c for c in changes if c[1] == Event.Type.ASSIGNMENT_CREATED), None)
    moves = [c for c in changes if c[1] != Event.Type.ASSIGNMENT_CREATED]
    if created is not None:
        holder = (created[2] or None) if created[4] in HELD else None
    elif moves and moves[0][1] == Event.Type.ASSIGNMENT_REASSIGNED:
        holder = moves[0][5] or None
    elif moves:
        holder = None if moves[0][3] == S.PENDING else (moves[0][2] or None)
    else:
        holder = agent_id if status != S.PENDING else None
    spans: list[Span] = []
    since = assigned_at
    for at, type_, event_agent, from_status, to_status, _from_agent, to_agent in moves:
        if type_ == Event.Type.ASSIGNMENT_REASSIGNED:
            new = (to_agent or None) if to_status in HELD else None
        elif to_status == S.PENDING:
            new = None
        elif from_status == S.PENDING and to_status in HELD:
            # A queued request served: the hand-over is the row's `assigned_at` (the event is stamped
            # a moment later, in the same transaction); its wait before is in the event's data.
            new = event_agent or None
            at = min(at, assigned_at)
        else:
            continue
        if at > since:
            spans.append(Span(holder, since, at, "moved" if holder != new else "open"))
        holder, since = new, max(since, at)
    end = min(released_at or now, now)
    spans.append(Span(holder, since, max(end, since), "ended" if released_at and released_at <= now else "open"))
    # Merge neighbours with the same holder (e.g. pending → active on the same agent is one stretch
    # of waiting then one of holding; active → active by the same agent is not a move).
    merged: list[Span] = []
    for span in spans:
        if merged and merged[-1].agent_id == span.agent_id:
            merged[-1].end, merged[-1].ended_by = span.end, span.ended_by
        else:
            merged.append(span)
    return merged


# --- GET /api/assignments/metrics ----------------------------------------------------------------------


def assignment_metrics(*, since: datetime, until: datetime, pool: str | None = None, now=None) -> dict:
    """The seed's metrics over [since, until), for one pool or all (see the module docstring for the
    definitions). Reads the assignments that overlap the window and their holder-changing events
    (one query), the live count and the conflict count."""
    now = now or timezone.now()
    horizon = min(until, now)
    window_seconds = max((until - since).total_seconds(), 1.0)
    assignments = Assignment.objects.all()
    events = Event.objects.filter(occurred_at__gte=since, occurred_at__lt=until)
    if pool:
        assignments = assignments.filter(pool__name=pool)
        events = events.filter(pool=pool)
    active = assignments.filter(status__in=Assignment.LIVE_STATUSES).count()
    conflicts = events.filter(type=Event.Type.ASSIGNMENT_CONFLICT).count()
    rows = list(
        assignments.filter(assigned_at__lt=until)
        .filter(Q(released_at__isnull=True) | Q(released_at__gt=since))
        # A request that waited for a profile and was never served keeps its deadline: not an
        # assignment, and it held nothing (a served one counts from its hand-over).
        .filter(wait_until__isnull=True)
        .values_list("assignment_id", "profile__profile_id", "agent__agent_id", "status", "assigned_at",
                     "released_at", "release_reason")
    )
    changes = holder_changes([r[0] for r in rows], since=min((r[4] for r in rows), default=since), until=until)
    total = successful = failed = 0
    durations: list[float] = []
    held: dict[str, float] = defaultdict(float)
    good: dict[str, int] = defaultdict(int)
    bad: dict[str, int] = defaultdict(int)
    for assignment_id, profile_id, agent_id, status, assigned_at, released_at, reason in rows:
        ended = released_at is not None and released_at < until
        spans = holding_spans(agent_id=agent_id, status=status, assigned_at=assigned_at,
                              released_at=released_at if ended else None, changes=changes.get(assignment_id, []),
                              now=horizon)
        for span in spans:
            if span.agent_id is not None:
                held[profile_id] += span.seconds_within(since, until)
            if span.agent_id is None or not (since <= span.end < until):
                continue
            if span.ended_by == "moved":
                bad[span.agent_id] += 1  # it lost the assignment (stale, drained, deregistered)
            elif span.ended_by == "ended":
                if status == S.RELEASED and reason == R.RELEASED:
                    good[span.agent_id] += 1
                elif status in (S.FAILED, S.EXPIRED) or reason == R.AGENT_LOST:
                    bad[span.agent_id] += 1
        if not since <= assigned_at < until:
            continue  # made before the window: counts for utilization and efficiency only
        total += 1
        if ended:
            durations.append((released_at - assigned_at).total_seconds())
            successful += status == S.RELEASED and reason == R.RELEASED
            failed += status in (S.FAILED, S.EXPIRED)
    utilization = sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))[:METRICS_TOP]
    agents = sorted(set(good) | set(bad), key=lambda a: (-(good[a] + bad[a]), a))[:METRICS_TOP]
    attempts = total + conflicts
    return {
        "since": since,
        "until": until,
        "window_seconds": round(window_seconds, 3),
        "pool": pool or None,
        "total_assignments": total,
        "active_assignments": active,
        "successful_assignments": successful,
        "failed_assignments": failed,
        "average_assignment_duration": round(sum(durations) / len(durations), 3) if durations else None,
        "profile_utilization_rates": {p: round(min(s / window_seconds, 1.0), 4) for p, s in utilization},
        "agent_efficiency_scores": {a: round(good[a] / (good[a] + bad[a]), 4) for a in agents},
        "conflicts": conflicts,
        "conflict_frequency": round(conflicts / attempts, 4) if attempts else 0.0,
    }


# --- Counting events per profile, agent and pool (the rollup job, and the live current hour) -------------


def event_counts(start: datetime, end: datetime, stats, *, pool: str | None = None) -> None:
    """Add to `stats[(scope, key)][column]` the rollup counts of the events in [start, end):
    assignments created (and handed over by failover, for the receiving agent), successes, failures,
    expirations, conflicts, waits, failovers (for the losing agent), and the tasks' queue moves and
    outcomes; and the time served requests had waited for their profile. Two grouped queries (of one
    pool's events with `pool`). A request queued for a profile is a wait, not a take, until it is
    served (`pending → active`); a wait that runs out is not an expiry."""
    Scope = UsageRollup.Scope
    events = Event.objects.filter(pool=pool) if pool else Event.objects.all()
    counted = (
        events.filter(occurred_at__gte=start, occurred_at__lt=end).filter(
            Q(type__in=[
                Event.Type.ASSIGNMENT_CREATED, Event.Type.ASSIGNMENT_REASSIGNED, Event.Type.ASSIGNMENT_CONFLICT,
                Event.Type.ASSIGNMENT_EXPIRED, Event.Type.ASSIGNMENT_STATUS_CHANGED, Event.Type.ASSIGNMENT_RELEASED,
            ]) | Q(type__startswith="task.")
        )
        .values_list("type", "from_status", "to_status", "profile_id", "agent_id", "pool",
                     "data__from_agent_id", "data__release_reason")
        .annotate(n=Count("seq"))
        .order_by()
    )
    for type_, from_status, to_status, profile_id, agent_id, pool_name, from_agent, release_reason, n in counted:
        everyone = ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        updates = []
        if type_ == Event.Type.ASSIGNMENT_CREATED:
            if to_status == S.PENDING:  # a request queued for a profile (assignments/waits.py): a wait, not a take
                updates.append(("waits", everyone[:2]))
            else:
                updates.append(("assignments", everyone))
        elif type_ == Event.Type.ASSIGNMENT_STATUS_CHANGED and (from_status, to_status) == (S.PENDING, S.ACTIVE):
            updates.append(("assignments", everyone))  # a queued request handed the profile: a take made then
        elif type_ == Event.Type.ASSIGNMENT_EXPIRED and from_status == S.PENDING and agent_id:
            pass  # a wait that ran out (or was broken out of a cycle): nothing held expired
        elif type_ == Event.Type.ASSIGNMENT_REASSIGNED:
            updates.append(("failovers", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, from_agent))))
            if to_status == S.ACTIVE:
                updates.append(("assignments", ((Scope.AGENT, agent_id),)))  # handed to it by failover or rebalancing
            elif to_status == S.PENDING:
                updates.append(("waits", everyone[:2]))
        elif type_ == Event.Type.ASSIGNMENT_CONFLICT:
            updates.append(("conflicts", everyone))
        elif type_ == Event.Type.ASSIGNMENT_EXPIRED:
            updates.append(("expirations", everyone))
        elif type_ == Event.Type.ASSIGNMENT_RELEASED:
            if release_reason == Assignment.ReleaseReason.RELEASED:
                updates.append(("successes", everyone))
        elif type_ == Event.Type.ASSIGNMENT_STATUS_CHANGED:
            if to_status == S.FAILED:
                updates.append(("failures", everyone))
        else:  # task.*
            if to_status == "queued":
                updates.append(("tasks_enqueued", everyone[1:2]))
            if from_status == "queued":
                updates.append(("tasks_dequeued", everyone[1:2]))
            outcome = {"task.completed": "tasks_completed", "task.cancelled": "tasks_cancelled",
                       "task.expired": "tasks_expired"}.get(type_)
            if type_ == "task.failed" and to_status == "failed":
                outcome = "tasks_failed"
            if outcome:
                updates.append((outcome, everyone[1:]))
        for what, scopes in updates:
            for scope, key in scopes:
                if key:
                    stats[(scope, key)][what] += n
    # How long the requests served in this window had waited for their profile (the hand-over's
    # event says; the served row itself counts from the hand-over).
    for profile_id, pool_name, waited in (
        events.filter(occurred_at__gte=start, occurred_at__lt=end, type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
                      from_status=S.PENDING, to_status=S.ACTIVE, data__has_key="waited_seconds")
        .values_list("profile_id", "pool")
        .annotate(waited=Sum(Cast(KT("data__waited_seconds"), FloatField())))
        .order_by()
    ):
        for key in ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name)):
            if key[1]:
                stats[key]["wait_seconds"] += waited or 0.0


# --- Series and rankings from the rollups ---------------------------------------------------------------

BUCKET_SECONDS = {"hour": 3600, "day": 86400}
_TRUNC = {"hour": TruncHour, "day": TruncDay}

ROLLUP_SUMS = ("assignments", "busy_seconds", "conflicts", "failures", "expirations", "successes", "failovers",
               "waits", "wait_seconds", "tasks_enqueued", "tasks_dequeued", "tasks_assigned", "task_wait_seconds",
               "tasks_completed", "tasks_failed", "tasks_cancelled", "tasks_expired", "task_run_seconds")


def bucket_floor(moment: datetime, bucket: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def bucket_starts(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    step = timedelta(seconds=BUCKET_SECONDS[bucket])
    starts, at = [], bucket_floor(since, bucket)
    while at < until:
        starts.append(at)
        at += step
    return starts


def _rollups(scope: str, since: datetime, until: datetime):
    """Rollup rows of `scope` whose hour overlaps [since, until): whole hours (a partly covered hour
    counts whole — the rollups have no finer grain)."""
    return UsageRollup.objects.filter(scope=scope, hour__gte=bucket_floor(since, "hour"), hour__lt=until)


def _series(scope: str, key: str | None, *, bucket: str, since: datetime, until: datetime) -> dict:
    rows = _rollups(scope, since, until)
    if key is not None:
        rows = rows.filter(key=key)
    grouped = (
        rows.annotate(bucket=_TRUNC[bucket]("hour")).values("bucket")
        .annotate(**{f: Sum(f) for f in ROLLUP_SUMS}).order_by("bucket")
    )
    return {row.pop("bucket"): row for row in grouped}


def _zero() -> dict:
    return dict.fromkeys(ROLLUP_SUMS, 0)


# Counted from events: for the current hour they are read live from the log at request time, so a
# page or a client sees a take or a conflict at once; busy and wait time (from the holding timeline)
# stay as fresh as the rollup job's last run.
LIVE_COUNT_FIELDS = ("assignments", "successes", "failures", "expirations", "conflicts", "waits", "failovers",
                     "tasks_enqueued", "tasks_dequeued", "tasks_completed", "tasks_failed", "tasks_cancelled",
                     "tasks_expired")


def _overlay_current_hour(by_bucket: dict, *, bucket: str, since: datetime, until: datetime, pool: str | None,
                          now=None) -> None:
    """Replace the current hour's counts in `by_bucket` (as last rolled up) by the event log's. Two
    queries: the hour's pool rollups, the hour's events grouped."""
    hour = bucket_floor(now or timezone.now(), "hour")
    if not bucket_floor(since, "hour") <= hour < until:
        return
    rolled = UsageRollup.objects.filter(scope=UsageRollup.Scope.POOL, hour=hour)
    if pool:
        rolled = rolled.filter(key=pool)
    stale = rolled.aggregate(**{f: Sum(f) for f in LIVE_COUNT_FIELDS})
    counted = defaultdict(lambda: defaultdict(int))
    event_counts(hour, hour + timedelta(hours=1), counted, pool=pool)
    row = by_bucket.setdefault(bucket_floor(hour, bucket), _zero())
    for field in LIVE_COUNT_FIELDS:
        fresh = sum(values[field] for (scope, _key), values in counted.items() if scope == UsageRollup.Scope.POOL)
        row[field] = (row[field] or 0) - (stale[field] or 0) + fresh


def utilization_series(*, bucket: str, since: datetime, until: datetime, pool: str | None = None) -> dict:
    """Per bucket, the pool's (or the fleet's) busy time, average profiles held, utilization (average
    held / enabled profiles of the pool, or of the fleet), and the counts of the bucket (the current
    hour's live from the event log). One grouped query on the pool rollups, two for the current
    hour, one count of profiles."""
    by_bucket = _series(UsageRollup.Scope.POOL, pool, bucket=bucket, since=since, until=until)
    _overlay_current_hour(by_bucket, bucket=bucket, since=since, until=until, pool=pool)
    profiles = Profile.objects.filter(enabled=True)
    if pool:
        profiles = profiles.filter(pool__name=pool)
    n_profiles = profiles.count()
    seconds = BUCKET_SECONDS[bucket]
    series = []
    for start in bucket_starts(since, until, bucket):
        row = by_bucket.get(start) or _zero()
        average_held = (row["busy_seconds"] or 0.0) / seconds
        series.append({
            "start": start,
            "assignments": row["assignments"] or 0,
            "busy_seconds": round(row["busy_seconds"] or 0.0, 3),
            "average_held": round(average_held, 4),
            "utilization": round(min(average_held / n_profiles, 1.0), 4) if n_profiles else None,
            "successes": row["successes"] or 0,
            "failures": row["failures"] or 0,
            "expirations": row["expirations"] or 0,
            "conflicts": row["conflicts"] or 0,
            "waits": row["waits"] or 0,
            "wait_seconds": round(row["wait_seconds"] or 0.0, 3),
            "failovers": row["failovers"] or 0,
        })
    return {"bucket": bucket, "since": since, "until": until, "pool": pool or None, "profiles": n_profiles,
            "series": series}


def _ranked(scope: str, *, since, until, keys=None, having: Q | None = None, order=(), limit=50) -> list[dict]:
    rows = _rollups(scope, since, until)
    if keys is not None:
        rows = rows.filter(key__in=keys)
    grouped = rows.values("key").annotate(**{f: Sum(f) for f in ROLLUP_SUMS})
    if having is not None:
        grouped = grouped.filter(having)
    return list(grouped.order_by(*order, "key")[:limit])


def contention_ranking(*, since: datetime, until: datetime, pool: str | None = None, limit: int = 50) -> list[dict]:
    """Profiles ranked by refused takes (conflicts), then by time spent waiting, then failovers: those
    with any of them. One grouped query on the profile rollups (plus the pool's profiles)."""
    keys = None
    if pool:
        keys = list(Profile.objects.filter(pool__name=pool).values_list("profile_id", flat=True))
    rows = _ranked(UsageRollup.Scope.PROFILE, since=since, until=until, keys=keys,
                   having=Q(conflicts__gt=0) | Q(wait_seconds__gt=0) | Q(failovers__gt=0),
                   order=("-conflicts", "-wait_seconds", "-failovers"), limit=limit)
    return [{
        "profile_id": r["key"],
        "conflicts": r["conflicts"] or 0,
        "waits": r["waits"] or 0,
        "wait_seconds": round(r["wait_seconds"] or 0.0, 3),
        "failovers": r["failovers"] or 0,
        "assignments": r["assignments"] or 0,
        "busy_seconds": round(r["busy_seconds"] or 0.0, 3),
    } for r in rows]


AGENT_SORTS = {
    "busy": ("-busy_seconds",),
    "assignments": ("-assignments",),
    "failovers": ("-failovers",),
    "tasks": ("-tasks_completed",),
}


def agent_ranking(*, since: datetime, until: datetime, pool: str | None = None, sort: str = "busy",
                  limit: int = 50) -> list[dict]:
    """Per agent over the window: assignments handed to it, busy time and busy share (busy seconds /
    (window × its capacity)), failovers away from it, how its holdings ended, its efficiency, and its
    tasks. One grouped query on the agent rollups, one read of the agents' capacity."""
    keys = None
    if pool:
        keys = list(Agent.objects.filter(pool__name=pool).values_list("agent_id", flat=True))
    rows = _ranked(UsageRollup.Scope.AGENT, since=since, until=until, keys=keys,
                   order=AGENT_SORTS.get(sort, AGENT_SORTS["busy"]), limit=limit)
    agents = {a: (p, c) for a, p, c in Agent.objects.filter(agent_id__in=[r["key"] for r in rows])
              .values_list("agent_id", "pool__name", "capacity")}
    window = max((until - bucket_floor(since, "hour")).total_seconds(), 1.0)
    result = []
    for r in rows:
        pool_name, capacity = agents.get(r["key"], (None, 0))
        good = r["successes"] or 0
        bad = (r["failures"] or 0) + (r["expirations"] or 0) + (r["failovers"] or 0)
        tasks_ended = (r["tasks_completed"] or 0) + (r["tasks_failed"] or 0)
        result.append({
            "agent_id": r["key"],
            "pool": pool_name,
            "assignments": r["assignments"] or 0,
            "busy_seconds": round(r["busy_seconds"] or 0.0, 3),
            "busy_share": round(min((r["busy_seconds"] or 0.0) / (window * capacity), 1.0), 4) if capacity else None,
            "successes": good,
            "failures": r["failures"] or 0,
            "expirations": r["expirations"] or 0,
            "failovers": r["failovers"] or 0,
            "efficiency": round(good / (good + bad), 4) if good + bad else None,
            "tasks_completed": r["tasks_completed"] or 0,
            "tasks_failed": r["tasks_failed"] or 0,
            "average_task_seconds": round((r["task_run_seconds"] or 0.0) / tasks_ended, 3) if tasks_ended else None,
        })
    return result


def task_series(*, bucket: str, since: datetime, until: datetime, pool: str | None = None) -> dict:
    """Queue depth and waits over time, from the `task.*` events the rollups count: per bucket, tasks
    that entered the queue (submitted or requeued) and left it (assigned, cancelled or expired while
    queued), the depth at the bucket's end, the average wait of the tasks assigned in it, and how
    tasks ended. All zero while no task event has been recorded (tasks not in use, or not yet built
    on this installation). Two grouped queries on the pool rollups."""
    by_bucket = _series(UsageRollup.Scope.POOL, pool, bucket=bucket, since=since, until=until)
    _overlay_current_hour(by_bucket, bucket=bucket, since=since, until=until, pool=pool)
    first = bucket_floor(since, bucket)
    before = UsageRollup.objects.filter(scope=UsageRollup.Scope.POOL, hour__lt=first)
    if pool:
        before = before.filter(key=pool)
    base = before.aggregate(i=Sum("tasks_enqueued"), o=Sum("tasks_dequeued"))
    depth = max((base["i"] or 0) - (base["o"] or 0), 0)
    series = []
    for start in bucket_starts(since, until, bucket):
        row = by_bucket.get(start) or _zero()
        depth = max(depth + (row["tasks_enqueued"] or 0) - (row["tasks_dequeued"] or 0), 0)
        assigned = row["tasks_assigned"] or 0
        series.append({
            "start": start,
            "enqueued": row["tasks_enqueued"] or 0,
            "dequeued": row["tasks_dequeued"] or 0,
            "queue_depth": depth,
            "assigned": assigned,
            "average_wait_seconds": round((row["task_wait_seconds"] or 0.0) / assigned, 3) if assigned else None,
            "completed": row["tasks_completed"] or 0,
            "failed": row["tasks_failed"] or 0,
            "cancelled": row["tasks_cancelled"] or 0,
            "expired": row["tasks_expired"] or 0,
        })
    recorded = Event.objects.filter(type__startswith="task.").exists()
    return {"bucket": bucket, "since": since, "until": until, "pool": pool or None, "tasks_recorded": recorded,
            "series": series}


def open_alert_counts() -> dict:
    """(kind, severity) → unresolved alerts."""
    return {
        (kind, severity): n
        for kind, severity, n in Alert.objects.filter(status__in=Alert.UNRESOLVED_STATUSES)
        .values_list("kind", "severity").annotate(n=Count("pk")).order_by()
    }
