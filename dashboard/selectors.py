"""Reads for the dashboard pages. Each reader does a fixed number of queries whatever the data size
(tests/dashboard/test_pages.py pins them), and nothing here counts rows of the event table: event
lists page by `seq` (keyset), never by OFFSET/COUNT(*).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import BigIntegerField, Count, F, Max, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent
from assignments.models import Alert, Assignment, Event, Profile
from assignments.selectors import event_filter_q
from assignments.waits import profile_queue
from pools.models import AgentPool, Task
from pools.selectors import PoolCounts, pool_counts, queue_stats, task_list

LIVE = Assignment.LIVE_STATUSES
HELD = Assignment.HELD_STATUSES
PAGE_SIZE = 50
EVENT_PAGE_SIZE = 50
FEED_SIZE = 20

# Event types whose rows say who holds a profile (conflicts and metadata updates do not change it).
HOLDER_EVENT_TYPES = (
    Event.Type.ASSIGNMENT_CREATED,
    Event.Type.ASSIGNMENT_REASSIGNED,
    Event.Type.ASSIGNMENT_STATUS_CHANGED,
    Event.Type.ASSIGNMENT_RELEASED,
    Event.Type.ASSIGNMENT_EXPIRED,
)


def latest_seq() -> int:
    """The newest event a page reflects. Read first, before the page's data, so that a live page
    subscribing with `since=` this value replays every change the page may have missed."""
    return Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def _live_count_q(prefix: str = "assignments__") -> Q:
    return Q(**{f"{prefix}status__in": LIVE})


# --- Overview -------------------------------------------------------------------------------------


@dataclass
class Condition:
    """Something an operator should look at, derived from the current state."""

    kind: str
    severity: str
    message: str
    url: str = ""
    dedup_key: str = ""  # the Alert dedup key of the same condition, when there is one


def overview(now: datetime | None = None) -> dict:
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)

    by_pool = pool_counts()
    by_status: dict[str, int] = {}
    for counts in by_pool.values():
        for status, n in counts.live_by_status.items():
            by_status[status] = by_status.get(status, 0) + n
    assignment_counts = [(value, label, by_status.get(value, 0)) for value, label in Assignment.Status.choices if value in LIVE]

    statuses = [value for value, _ in Agent.Status.choices]
    agent_totals = dict.fromkeys(statuses, 0)
    agents_by_pool = []
    for counts in sorted(by_pool.values(), key=lambda c: c.name):
        if not counts.agents:
            continue
        for status in statuses:
            agent_totals[status] += counts.agents_by_status.get(status, 0)
        agents_by_pool.append({
            "name": counts.name,
            "statuses": [(s, counts.agents_by_status.get(s, 0)) for s in statuses if counts.agents_by_status.get(s)],
            "total": counts.agents,
            "held": counts.held,
            "capacity": counts.capacity,
            "used": counts.capacity_used_fraction,
        })

    profiles = Profile.objects.aggregate(total=Count("id"), enabled=Count("id", filter=Q(enabled=True)))
    held = sum(by_status.get(s, 0) for s in HELD)
    utilization = (held / profiles["enabled"]) if profiles["enabled"] else 0.0

    hourly = dict(
        Event.objects.filter(
            occurred_at__gte=hour_ago,
            type__in=[Event.Type.ASSIGNMENT_CREATED, Event.Type.ASSIGNMENT_CONFLICT, Event.Type.ASSIGNMENT_EXPIRED],
        )
        .values_list("type")
        .annotate(n=Count("seq"))
        .order_by()
    )
    created = hourly.get(Event.Type.ASSIGNMENT_CREATED, 0)
    conflicts = hourly.get(Event.Type.ASSIGNMENT_CONFLICT, 0)
    expired = hourly.get(Event.Type.ASSIGNMENT_EXPIRED, 0)
    attempts = created + conflicts

    return {
        "assignment_counts": assignment_counts,
        "live_total": sum(by_status.values()),
        "agent_statuses": [(s, label) for s, label in Agent.Status.choices],
        "agent_totals": [agent_totals[s] for s in statuses],
        "agent_total": sum(agent_totals.values()),
        "agents_by_pool": agents_by_pool,
        "profiles_total": profiles["total"],
        "profiles_enabled": profiles["enabled"],
        "profiles_held": held,
        "utilization": utilization,
        "created_last_hour": created,
        "conflicts_last_hour": conflicts,
        "expired_last_hour": expired,
        "conflict_rate": (conflicts / attempts) if attempts else 0.0,
        "recent_events": list(Event.objects.order_by("-seq")[:FEED_SIZE]),
        "conditions": conditions(expired_last_hour=expired, conflicts_last_hour=conflicts),
    }


def conditions(*, expired_last_hour: int, conflicts_last_hour: int, limit: int = 10) -> list[Condition]:
    """Open conditions computed from the current state: stale agents, agents holding more than their
    capacity, pools with no healthy agent, and the last hour's expirations and conflicts. 3 queries."""
    found: list[Condition] = []
    for agent_id, pool_name, last_heartbeat in (
        Agent.objects.filter(status=Agent.Status.STALE)
        .order_by("-last_heartbeat")
        .values_list("agent_id", "pool__name", "last_heartbeat")[: limit + 1]
    ):
        found.append(Condition("agent_stale", "critical", f"Agent {agent_id} ({pool_name}) is stale",
                               f"/agents/{agent_id}/", dedup_key=f"agent_stale:{agent_id}"))
    # Grouped from the live assignments (index on status), not from every agent's whole history.
    for agent_id, capacity, live in (
        Assignment.objects.filter(status__in=LIVE, agent__isnull=False)
        .values_list("agent__agent_id", "agent__capacity")
        .annotate(live=Count("id"))
        .filter(live__gt=F("agent__capacity"))
        .order_by("agent__agent_id")[:limit]
    ):
        found.append(Condition("agent_over_capacity", "warning", f"Agent {agent_id} holds {live} of {capacity}", f"/agents/{agent_id}/"))
    for name in (
        AgentPool.objects.annotate(
            healthy=Count(
                "agents",
                filter=Q(agents__status=Agent.Status.ACTIVE, agents__health_score__gte=F("min_health_score")),
            )
        )
        .filter(healthy=0)
        .order_by("name")
        .values_list("name", flat=True)[:limit]
    ):
        found.append(Condition("pool_no_healthy_agent", "critical", f"Pool {name} has no healthy agent",
                               f"/pools/#pool-{name}", dedup_key=f"pool_no_healthy_agent:{name}"))
    if expired_last_hour:
        found.append(Condition("expirations", "warning", f"{expired_last_hour} assignments expired in the last hour",
                               "/history/?type=assignment.expired"))
    if conflicts_last_hour:
        found.append(Condition("conflicts", "info", f"{conflicts_last_hour} refused takes (conflicts) in the last hour",
                               "/history/?type=assignment.conflict"))
    return found


# --- Assignments ----------------------------------------------------------------------------------

ASSIGNMENT_SORTS = {
    "newest": ("-assigned_at", "-id"),
    "oldest": ("assigned_at", "id"),
    "activity": ("-last_activity", "-id"),
    "idlest": ("last_activity", "id"),
    "profile": ("profile__profile_id",),
    "agent": ("agent__agent_id", "-assigned_at"),
    "status": ("status", "-assigned_at"),
}


@dataclass
class Page:
    rows: list
    number: int
    has_next: bool
    start: int = 0

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def end(self) -> int:
        return self.start + len(self.rows)


def assignment_page(*, status: str = "live", pool: str = "", agent_id: str = "", profile_id: str = "",
                    workflow_id: str = "", sort: str = "newest", page: int = 1, per_page: int = PAGE_SIZE) -> Page:
    """One page of assignments (2 queries): the page's ids are sorted on the narrow table first, then
    only those rows are read with their profile, pool and agent — sorting thousands of joined, wide
    rows to keep fifty costs far more. No COUNT: the next page is known by fetching one row more."""
    qs = _assignments_matching(Assignment.objects.all(), status=status, pool=pool, agent_id=agent_id,
                               profile_id=profile_id, workflow_id=workflow_id)
    qs = qs.order_by(*ASSIGNMENT_SORTS.get(sort, ASSIGNMENT_SORTS["newest"]))
    offset = (page - 1) * per_page
    ids = list(qs.values_list("pk", flat=True)[offset : offset + per_page + 1])
    has_next = len(ids) > per_page
    ids = ids[:per_page]
    by_pk = Assignment.objects.select_related("profile", "pool", "agent").in_bulk(ids)
    return Page(rows=[by_pk[pk] for pk in ids if pk in by_pk], number=page, has_next=has_next, start=offset)


def pool_names() -> list[str]:
    return list(AgentPool.objects.order_by("name").values_list("name", flat=True))


# --- Agents ---------------------------------------------------------------------------------------


def agent_page(*, pool: str = "", status: str = "", page: int = 1, per_page: int = 100) -> Page:
    """Agents with the number of live assignments each holds (2 queries: the page of agents, then
    the live counts of just those agents — counting for every agent before paging costs far more)."""
    qs = Agent.objects.select_related("pool")
    if pool:
        qs = qs.filter(pool__name=pool)
    if status:
        qs = qs.filter(status=status)
    offset = (page - 1) * per_page
    rows = list(qs.order_by("pool__name", "agent_id")[offset : offset + per_page + 1])
    has_next = len(rows) > per_page
    rows = rows[:per_page]
    live = dict(
        Assignment.objects.filter(agent_id__in=[a.pk for a in rows], status__in=LIVE)
        .values_list("agent_id").annotate(n=Count("id")).order_by()
    )
    for agent in rows:
        agent.live = live.get(agent.pk, 0)
    return Page(rows=rows, number=page, has_next=has_next, start=offset)


def agent_detail(agent_id: str) -> dict | None:
    """An agent, its live and recent assignments, and its recent events (4 queries)."""
    agent = Agent.objects.select_related("pool").filter(agent_id=agent_id).first()
    if agent is None:
        return None
    assignments = list(
        Assignment.objects.filter(agent=agent).select_related("profile", "pool", "agent").order_by("-assigned_at")[:50]
    )
    live = [a for a in assignments if a.status in LIVE]
    live_count = Assignment.objects.filter(agent=agent, status__in=LIVE).count()
    events = list(Event.objects.filter(agent_id=agent_id).order_by("-seq")[:EVENT_PAGE_SIZE])
    return {"agent": agent, "live": live, "live_count": live_count,
            "recent": [a for a in assignments if a.status not in LIVE][:20], "events": events}


# --- Pools ----------------------------------------------------------------------------------------


@dataclass
class PoolRow:
    pool: AgentPool
    counts: PoolCounts


def queued_requests(*, limit: int = 200) -> list[Assignment]:
    """Requests waiting for a profile (`queued_q`), by profile, then in arrival order (1 query)."""
    return list(
        Assignment.objects.queued().select_related("profile", "pool", "agent")
        .order_by("pool__name", "profile__profile_id", "assigned_at", "pk")[:limit]
    )


def pool_rows() -> list[PoolRow]:
    """Every pool with its counts (`pools.selectors.pool_counts`: 4 queries)."""
    pools = list(AgentPool.objects.order_by("name"))
    counts = pool_counts([p.pk for p in pools])
    return [PoolRow(pool=p, counts=counts[p.pk]) for p in pools]


# --- Profiles -------------------------------------------------------------------------------------


def profile_page(*, q: str = "", state: str = "", pool: str = "", page: int = 1, per_page: int = PAGE_SIZE) -> Page:
    """Profiles with their live assignment, if any (2 queries). `state` is "held", "available" or ""."""
    qs = Profile.objects.select_related("pool")
    if q:
        qs = qs.filter(Q(profile_id__startswith=q) | Q(name__icontains=q))
    if pool:
        qs = qs.filter(pool__name=pool)
    # Held: it has a holder (`holding_q`); requests queued for it do not make it held.
    if state == "held":
        qs = qs.filter(pk__in=Assignment.objects.holding().values("profile_id"))
    elif state == "available":
        qs = qs.exclude(pk__in=Assignment.objects.holding().values("profile_id"))
    offset = (page - 1) * per_page
    profiles = list(qs.order_by("profile_id")[offset : offset + per_page + 1])
    has_next = len(profiles) > per_page
    profiles = profiles[:per_page]
    live = {
        a.profile_id: a
        for a in Assignment.objects.holding().filter(profile__in=[p.pk for p in profiles]).select_related("agent")
    }
    for p in profiles:
        p.live_assignment = live.get(p.pk)
    return Page(rows=profiles, number=page, has_next=has_next, start=offset)


def profile_detail(profile_id: str, *, page: int = 1, per_page: int = PAGE_SIZE) -> dict | None:
    """A profile, its assignment history (newest first) and its recent events (3 queries)."""
    profile = Profile.objects.select_related("pool").filter(profile_id=profile_id).first()
    if profile is None:
        return None
    offset = (page - 1) * per_page
    assignments = list(
        Assignment.objects.filter(profile=profile).select_related("profile", "pool", "agent")
        .order_by("-assigned_at", "-id")[offset : offset + per_page + 1]
    )
    events = list(Event.objects.filter(profile_id=profile_id).order_by("-seq")[:EVENT_PAGE_SIZE])
    live = Assignment.objects.holding().filter(profile=profile).select_related("agent", "pool").first()
    pool = profile.pool or (live.pool if live is not None else None)
    queue = list(
        profile_queue(profile, pool.conflict_policy if pool else "fifo").select_related("agent")
    )
    return {
        "profile": profile,
        "live": live,
        "queue": queue,
        "queue_policy": pool.conflict_policy if pool else "fifo",
        "history": Page(rows=assignments[:per_page], number=page, has_next=len(assignments) > per_page, start=offset),
        "events": events,
    }


# --- History (the event log) ----------------------------------------------------------------------


@dataclass
class EventPage:
    rows: list
    newer: int | None  # pass as `after=` for the newer page
    older: int | None  # pass as `before=` for the older page


# A time range is also turned into a `seq` range (inside the same query), so that reading newest
# first by `seq` starts and stops near the range instead of walking the whole log. `seq` follows
# `occurred_at` except for events of transactions that overlapped: an event is stamped when
# recorded and gets its seq at commit, so the two orders differ by at most a transaction's length.
# The margin covers that many times over; the exact time filter still applies. The bounds' own
# output_field matters: Django binds a Value by its field, and an integer Value is an int4 — 2**62
# bound by the server as int4 came back 0 (PostgreSQL binds values server-side, config/settings.py).
SEQ_TIME_MARGIN = timedelta(minutes=5)


def event_history_q(*, type: str = "", pool: str = "", agent_id: str = "", profile_id: str = "",
                    since: datetime | None = None, until: datetime | None = None) -> Q:
    q = event_filter_q(types=[type] if type else None, pool=pool or None, agent_id=agent_id or None,
                       profile_id=profile_id or None)
    if since:
        q &= Q(occurred_at__gte=since) & Q(seq__gt=Coalesce(Subquery(
            Event.objects.filter(occurred_at__lt=since - SEQ_TIME_MARGIN).order_by("-occurred_at").values("seq")[:1]
        ), Value(0, output_field=BigIntegerField()), output_field=BigIntegerField()))
    if until:
        q &= Q(occurred_at__lt=until) & Q(seq__lt=Coalesce(Subquery(
            Event.objects.filter(occurred_at__gte=until + SEQ_TIME_MARGIN).order_by("occurred_at").values("seq")[:1]
        ), Value(2**62, output_field=BigIntegerField()), output_field=BigIntegerField()))
    return q


def event_page(q: Q, *, before: int | None = None, after: int | None = None, per_page: int = EVENT_PAGE_SIZE) -> EventPage:
    """Newest first, keyset-paginated on `seq` (1 query, no COUNT on the event table)."""
    if after is not None:
        rows = list(Event.objects.filter(q, seq__gt=after).order_by("seq")[: per_page + 1])
        more_newer = len(rows) > per_page
        rows = rows[:per_page][::-1]
        return EventPage(rows=rows, newer=rows[0].seq if rows and more_newer else None,
                         older=rows[-1].seq if rows else None)
    qs = Event.objects.filter(q)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    rows = list(qs.order_by("-seq")[: per_page + 1])
    more_older = len(rows) > per_page
    rows = rows[:per_page]
    return EventPage(rows=rows, newer=rows[0].seq if rows and before is not None else None,
                     older=rows[-1].seq if rows and more_older else None)


def event_iter(q: Q, *, chunk: int = 2000):
    """Every event matching `q`, newest first, read in keyset chunks (for the streamed CSV export:
    memory stays flat and no server-side cursor outlives a chunk)."""
    before = None
    while True:
        qs = Event.objects.filter(q)
        if before is not None:
            qs = qs.filter(seq__lt=before)
        rows = list(qs.order_by("-seq")[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        before = rows[-1].seq


@dataclass
class HolderAnswer:
    """Who held a profile at a moment, from the event log."""

    profile_id: str
    at: datetime
    exists: bool
    agent_id: str | None = None  # the agent driving it then, or None
    status: str | None = None  # the assignment's status then; None when free
    assignment_id: str | None = None
    since: datetime | None = None  # when the state in force at `at` began
    event: Event | None = None
    held_since: datetime | None = None  # when this assignment was created

    @property
    def held(self) -> bool:
        return self.agent_id is not None and self.status in HELD


def holder_at(profile_id: str, at: datetime) -> HolderAnswer:
    """Who held `profile_id` at `at`: the last event that set its holder at or before `at` says
    (created or reassigned → that agent; released, expired or failed → nobody; pending → waiting).
    At most 3 queries: the profile's existence, that event, and when its assignment was created."""
    exists = Profile.objects.filter(profile_id=profile_id).exists()
    events = list(
        Event.objects.filter(profile_id=profile_id, occurred_at__lte=at, type__in=HOLDER_EVENT_TYPES)
        .order_by("-seq")[:1]
    )
    answer = HolderAnswer(profile_id=profile_id, at=at, exists=exists)
    if not events:
        return answer
    event = events[0]
    answer.event = event
    answer.since = event.occurred_at
    answer.assignment_id = str(event.assignment_id) if event.assignment_id else None
    if event.to_status in LIVE:
        answer.status = event.to_status
        answer.agent_id = event.agent_id or None
        if event.assignment_id:
            answer.held_since = (
                Event.objects.filter(assignment_id=event.assignment_id, type=Event.Type.ASSIGNMENT_CREATED)
                .values_list("occurred_at", flat=True).first()
            )
    return answer


def agent_names(limit: int = 500) -> list[str]:
    return list(Agent.objects.order_by("agent_id").values_list("agent_id", flat=True)[:limit])


def event_types() -> list[str]:
    return [t for t, _ in Event.Type.choices]


def newest_activity() -> datetime | None:
    return Assignment.objects.aggregate(m=Max("last_activity"))["m"]


# --- Tasks ----------------------------------------------------------------------------------------

TASK_PAGE_SIZE = 100
# What the tasks page lists by default: work not finished yet.
OPEN_TASK_STATUSES = ("queued", "assigned", "running")


@dataclass
class QueueRow:
    pool: str
    cells: list  # one dict per priority (urgent … low): size, oldest_age_seconds, wait_p95_seconds…

    @property
    def total(self) -> int:
        return sum(cell["size"] for cell in self.cells)


def queue_rows(*, pool: str = "", names: list[str] | None = None) -> list[QueueRow]:
    """Each pool's queues by priority, with size, oldest age and wait (`pools.selectors.queue_stats`;
    two queries), pools with nothing queued included (`names`: every pool's, if the caller has them)."""
    stats = queue_stats(pool=pool or None)
    names = [pool] if pool else (names if names is not None else pool_names())
    rows = []
    for name in names:
        per_priority = stats["pools"].get(name, {})
        cells = [
            {"priority": priority, **(per_priority.get(priority) or {"size": 0, "oldest_age_seconds": None,
                                                                "wait_p50_seconds": None, "wait_p95_seconds": None,
                                                                "assigned_last_minute": 0})}
            for priority in Task.Priority.values
        ]
        rows.append(QueueRow(pool=name, cells=cells))
    return rows


def task_page(*, pool: str = "", status: str = "", priority: str = "", page: int = 1,
              per_page: int = TASK_PAGE_SIZE) -> Page:
    """Tasks, the next due first when listing open ones (one query)."""
    qs = task_list()
    if pool:
        qs = qs.filter(pool__name=pool)
    if priority:
        qs = qs.filter(priority=priority)
    if status == "all":
        qs = qs.order_by("-submitted_at", "-pk")
    elif status:
        qs = qs.filter(status=status).order_by("queue_order", "pk") if status == "queued" else \
            qs.filter(status=status).order_by("-submitted_at", "-pk")
    else:
        qs = qs.filter(status__in=OPEN_TASK_STATUSES).order_by("status", "queue_order", "pk")
    offset = (page - 1) * per_page
    rows = list(qs[offset : offset + per_page + 1])
    return Page(rows=rows[:per_page], number=page, has_next=len(rows) > per_page, start=offset)


# --- Alerts ---------------------------------------------------------------------------------------


def alert_page(*, status: str = "unresolved", kind: str = "", severity: str = "", pool: str = "", page: int = 1,
               per_page: int = PAGE_SIZE) -> Page:
    """Alerts, newest first, filtered (1 query: one row more than the page says if there is a next)."""
    qs = alert_queryset(status=status, kind=kind, severity=severity, pool=pool)
    offset = (page - 1) * per_page
    rows = list(qs.order_by("-raised_at", "-pk")[offset : offset + per_page + 1])
    return Page(rows=rows[:per_page], number=page, has_next=len(rows) > per_page, start=offset)


def alert_queryset(*, status: str = "unresolved", kind: str = "", severity: str = "", pool: str = ""):
    qs = Alert.objects.all()
    if status == "unresolved":
        qs = qs.filter(status__in=Alert.UNRESOLVED_STATUSES)
    elif status and status != "all":
        qs = qs.filter(status=status)
    if kind:
        qs = qs.filter(kind=kind)
    if severity:
        qs = qs.filter(severity=severity)
    if pool:
        qs = qs.filter(pool=pool)
    return qs


def iter_by_pk(queryset, *, chunk: int = 2000):
    """Every row of `queryset` in primary-key order, read in keyset chunks (the CSV exports: memory
    stays flat and no server-side cursor outlives a chunk)."""
    last = None
    while True:
        qs = queryset.order_by("pk")
        if last is not None:
            qs = qs.filter(pk__gt=last)
        rows = list(qs[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1].pk


def assignment_queryset(*, status: str = "live", pool: str = "", agent_id: str = "", profile_id: str = "",
                        workflow_id: str = "", sort: str = "") -> QuerySet:
    """The assignments of the /assignments/ filters (for the CSV export; the page pages them)."""
    return _assignments_matching(Assignment.objects.select_related("profile", "pool", "agent"), status=status,
                                 pool=pool, agent_id=agent_id, profile_id=profile_id, workflow_id=workflow_id)


def _assignments_matching(qs, *, status: str, pool: str, agent_id: str, profile_id: str, workflow_id: str):
    """The /assignments/ filters, for the page and its CSV export alike."""
    if status == "live":
        qs = qs.filter(status__in=LIVE)
    elif status and status != "all":
        qs = qs.filter(status=status)
    if pool:
        qs = qs.filter(pool__name=pool)
    if agent_id:
        qs = qs.filter(agent__agent_id=agent_id)
    if profile_id:
        qs = qs.filter(profile__profile_id__startswith=profile_id)
    if workflow_id:
        qs = qs.filter(workflow_id=workflow_id)
    return qs
