"""Reads of profiles, assignments and the event log. No writes here."""

from datetime import timedelta

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from assignments import cache
from assignments.models import Alert, Assignment, Event, Profile

# A `types` filter item ending in "." (or ".*") matches every type with that prefix.
MAX_EVENT_PAGE = 1000


def event_filter_q(*, types: list[str] | None = None, pool: str | None = None, agent_id: str | None = None,
                   profile_id: str | None = None) -> Q:
    q = Q()
    if types:
        type_q = Q()
        for t in types:
            if t.endswith(".*"):
                t = t[:-1]
            type_q |= Q(type__startswith=t) if t.endswith(".") else Q(type=t)
        q &= type_q
    if pool:
        q &= Q(pool=pool)
    if agent_id:
        q &= Q(agent_id=agent_id)
    if profile_id:
        q &= Q(profile_id=profile_id)
    return q


def event_matches(payload: dict, *, types=None, pool=None, agent_id=None, profile_id=None) -> bool:
    """The same filter as `event_filter_q`, applied to an event payload already in memory."""
    if types and not any(
        payload["type"].startswith(t[:-1] if t.endswith(".*") else t) if t.endswith((".", ".*")) else payload["type"] == t
        for t in types
    ):
        return False
    if pool and payload.get("pool") != pool:
        return False
    if agent_id and payload.get("agent_id") != agent_id:
        return False
    if profile_id and payload.get("profile_id") != profile_id:
        return False
    return True


def event_list(*, since: int = 0, limit: int = 100, types=None, pool=None, agent_id=None, profile_id=None) -> list[Event]:
    """Events with `seq > since`, in `seq` order, at most `limit` (capped at MAX_EVENT_PAGE).

    Gap-free by construction: events become visible only in seq order (assignments/events.py).
    """
    limit = max(1, min(int(limit), MAX_EVENT_PAGE))
    q = event_filter_q(types=types, pool=pool, agent_id=agent_id, profile_id=profile_id)
    return list(Event.objects.filter(q, seq__gt=since).order_by("seq")[:limit])


def assignments_live_for_agent(agent) -> QuerySet:
    return Assignment.objects.filter(agent=agent, status__in=Assignment.LIVE_STATUSES)


def assignment_live_for_profile(profile_id: str) -> Assignment | None:
    """The profile's live assignment, or None when it is free: from the cache of live assignments
    (assignments/cache.py) when it has the answer, else from the database (and then cached).
    What comes from the cache is a read-only copy (its `last_activity` may lag behind).

    Inside a transaction it reads the database: the cache learns of a change only after commit, so
    a transaction must see its own writes (and its test-case wrapper never commits)."""
    if connection.in_atomic_block:
        return assignment_live_for_profile_from_db(profile_id)
    hit, data = cache.cached_for_profile(profile_id)
    if hit:
        return cache.from_snapshot(data) if data is not None else None
    assignment = assignment_live_for_profile_from_db(profile_id)
    cache.fill_profile(profile_id, assignment)
    return assignment


def assignment_live_for_profile_from_db(profile_id: str) -> Assignment | None:
    return (
        Assignment.objects.holding().filter(profile__profile_id=profile_id)
        .select_related("profile", "pool", "agent")
        .first()
    )


def assignment_list() -> QuerySet:
    return Assignment.objects.select_related("profile", "pool", "agent")


def profile_list() -> QuerySet:
    return Profile.objects.select_related("pool")


def profile_assignment(profile_id: str) -> tuple[bool, Assignment | None]:
    """(whether the profile exists, its live assignment or None). One query when it is held."""
    live = assignment_live_for_profile(profile_id)
    if live is not None:
        return True, live
    return Profile.objects.filter(profile_id=profile_id).exists(), None


# Per-profile and per-agent rows in the metrics are capped: the busiest first.
METRICS_TOP = 50


def assignment_metrics(*, window_seconds: int, now=None) -> dict:
    """Totals over the last `window_seconds`: assignments made, how they ended, average duration,
    conflicts and their rate, per-profile utilization (share of the window the profile was held) and
    per-agent efficiency (share of its ended assignments that ended well). Three queries."""
    S = Assignment.Status
    now = now or timezone.now()
    start = now - timedelta(seconds=window_seconds)
    active = Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES).count()
    conflicts = Event.objects.filter(type=Event.Type.ASSIGNMENT_CONFLICT, occurred_at__gte=start).count()
    rows = (
        Assignment.objects.filter(assigned_at__lt=now)
        .filter(Q(released_at__isnull=True) | Q(released_at__gt=start))
        # A request that waited for a profile and was never served keeps its deadline: not an
        # assignment (a served one loses it and counts from its hand-over).
        .filter(wait_until__isnull=True)
        .values_list("profile__profile_id", "agent__agent_id", "status", "assigned_at", "released_at")
    )
    total = successful = failed = 0
    durations: list[float] = []
    held: dict[str, float] = {}
    agents: dict[str, dict] = {}
    for profile_id, agent_id, status, assigned_at, released_at in rows.iterator(chunk_size=2000):
        held_from, held_to = max(assigned_at, start), min(released_at or now, now)
        if status != S.PENDING or agent_id:
            held[profile_id] = held.get(profile_id, 0.0) + max((held_to - held_from).total_seconds(), 0.0)
        if assigned_at < start:
            continue  # made before the window: counts for utilization only
        total += 1
        ok = status == S.RELEASED
        bad = status in (S.FAILED, S.EXPIRED)
        successful += ok
        failed += bad
        if released_at is not None:
            durations.append((released_at - assigned_at).total_seconds())
        if agent_id:
            a = agents.setdefault(agent_id, {"agent_id": agent_id, "assignments": 0, "successful": 0, "failed": 0, "durations": []})
            a["assignments"] += 1
            a["successful"] += ok
            a["failed"] += bad
            if released_at is not None:
                a["durations"].append((released_at - assigned_at).total_seconds())
    utilization = sorted(
        ({"profile_id": p, "held_seconds": round(s, 1), "utilization": round(min(s / window_seconds, 1.0), 4)} for p, s in held.items()),
        key=lambda r: (-r["held_seconds"], r["profile_id"]),
    )[:METRICS_TOP]
    efficiency = []
    for a in sorted(agents.values(), key=lambda r: (-r["assignments"], r["agent_id"]))[:METRICS_TOP]:
        ended = a["successful"] + a["failed"]
        efficiency.append(
            {
                "agent_id": a["agent_id"],
                "assignments": a["assignments"],
                "successful": a["successful"],
                "failed": a["failed"],
                "average_duration_seconds": round(sum(a["durations"]) / len(a["durations"]), 3) if a["durations"] else None,
                "efficiency": round(a["successful"] / ended, 4) if ended else None,
            }
        )
    attempts = total + conflicts
    return {
        "window_seconds": window_seconds,
        "since": start,
        "until": now,
        "total": total,
        "active": active,
        "successful": successful,
        "failed": failed,
        "average_duration_seconds": round(sum(durations) / len(durations), 3) if durations else None,
        "conflicts": conflicts,
        "conflict_rate": round(conflicts / attempts, 4) if attempts else 0.0,
        "profile_utilization": utilization,
        "agent_efficiency": efficiency,
    }


def alert_list(*, status: str | list[str] | None = None, pool: str | None = None, limit: int = 100) -> list:
    """Alerts, newest first; `status` "unresolved" means open or acknowledged."""
    qs = Alert.objects.all()
    if status == "unresolved":
        qs = qs.filter(status__in=Alert.UNRESOLVED_STATUSES)
    elif isinstance(status, str):
        qs = qs.filter(status=status)
    elif status:
        qs = qs.filter(status__in=status)
    if pool:
        qs = qs.filter(pool=pool)
    return list(qs.order_by("-raised_at", "-pk")[: max(1, min(int(limit), 1000))])


def alert_queryset() -> QuerySet:
    """Every alert, newest first (the API's list filters it: assignments/filters.AlertFilter)."""
    return Alert.objects.order_by("-raised_at", "-pk")
