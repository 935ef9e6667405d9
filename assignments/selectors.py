"""Reads of profiles, assignments and the event log. No writes here."""

from django.db import connection
from django.db.models import Q, QuerySet

from agents.models import Agent
from assignments import cache
from assignments.models import Alert, Assignment, Event, Profile
from config.sql import EXISTS, CompiledQuery

# Every concrete field of an assignment by name (foreign keys as their ids), for the compiled reads
# that build whole assignments (`CompiledQuery.objects`): a profile's holder, a queue's next request.
ASSIGNMENT_FIELDS = tuple(f.name for f in Assignment._meta.concrete_fields)

# Whether a profile has a holder (held by an agent, or its pool's session waiting for one): asked
# under the profile's row lock by selections and hand-overs.
PROFILE_HELD = CompiledQuery(
    lambda pk: Assignment.objects.holding().filter(profile_id=pk), sentinels=(-7_000_000_001,), kind=EXISTS
)

# A profile's holder, whole, with what a refusal, a queued request and a preemption read of its agent.
ASSIGNMENT_AGENT_COLUMNS = ("agent__agent_id", "agent__priority")
_PROFILE_HOLDER = CompiledQuery(
    lambda pk: Assignment.objects.holding().filter(profile_id=pk)
    .values_list(*ASSIGNMENT_FIELDS, *ASSIGNMENT_AGENT_COLUMNS)[:1],
    sentinels=(-7_000_000_001,),
)


def with_agent(assignment: Assignment, agent_values, *, using: str) -> Assignment:
    """`assignment` (a compiled read's) with its agent as that read gave it: the values of
    ASSIGNMENT_AGENT_COLUMNS, the agent's other fields deferred."""
    if assignment.agent_id is not None:
        assignment.agent = Agent.from_db(using, ["id", "agent_id", "priority"], [assignment.agent_id, *agent_values])
    return assignment


def profile_holder(profile: Profile) -> Assignment | None:
    """The profile's holder (at most one: the partial unique index), or None. One compiled statement
    (a waiting take's hot path, issue 15)."""
    found = _PROFILE_HOLDER.objects(Assignment, ASSIGNMENT_FIELDS, profile.pk)
    if not found:
        return None
    holder = with_agent(found[0], found[0]._extra, using=_PROFILE_HOLDER.using)
    holder.profile = profile
    return holder


# An agent's live assignments, as (id, assignment_id, status, last_activity) rows: read by every
# heartbeat and every take that waits (its capacity), so compiled once (config/sql.py).
AGENT_LIVE_FIELDS = ("id", "assignment_id", "status", "last_activity")
AGENT_LIVE = CompiledQuery(
    lambda pk: Assignment.objects.filter(agent_id=pk, status__in=Assignment.LIVE_STATUSES).values_list(*AGENT_LIVE_FIELDS),
    sentinels=(-7_000_000_001,),
)

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
