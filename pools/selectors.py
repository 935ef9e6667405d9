"""Reads of pools. No writes here.

`pool_counts` is the one definition of a pool's counts: the API (`GET /api/pools`), the dashboard
(`/pools/`, the overview) and the admin's pool list all show these numbers.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection
from django.db.models import Avg, Count, DateTimeField, DurationField, ExpressionWrapper, F, Min, Q, Sum, Value
from django.utils import timezone

from agents.models import Agent
from assignments.models import Assignment, Profile, live_q, queued_q, waiting_q
from config.sql import EXISTS, CompiledQuery
from pools.models import AgentPool, Task

# Agents that may hold work: their capacity is the pool's capacity.
_HOLDING_AGENT_STATUSES = (Agent.Status.ACTIVE, Agent.Status.BUSY)


@dataclass
class PoolCounts:
    name: str = ""
    agents: int = 0
    agents_by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Agent.Status.values, 0))
    healthy: int = 0  # active agents at or above the pool's minimum health score (may get new work)
    capacity: int = 0  # assignments its active and busy agents may hold
    live: int = 0  # live assignments (`live_q`)
    live_by_status: dict[str, int] = field(default_factory=dict)
    held: int = 0  # live assignments an agent is driving (active, idle, releasing)
    waiting: int = 0  # waiting for an agent (`waiting_q`)
    queued: int = 0  # requests waiting for a profile (`queued_q`), counted in `live`, not in `held`
    profiles: int = 0  # counted only when asked for (`pool_counts(profiles=True)`)
    queued_tasks: int = 0  # counted only by `pools_attach_counts` (the API's pools)

    @property
    def capacity_used_fraction(self) -> float:
        if self.capacity:
            return self.held / self.capacity
        return 1.0 if self.held else 0.0


def pool_counts(pool_ids: list[int] | None = None, *, profiles: bool = False) -> dict[int, PoolCounts]:
    """Counts per pool primary key, for these pools (every pool that has agents or live assignments
    when None). Two grouped queries whatever the number of pools, three with `profiles`."""
    counts: dict[int, PoolCounts] = {}
    agents = Agent.objects.all()
    assignments = Assignment.objects.filter(live_q())
    pooled_profiles = Profile.objects.filter(pool__isnull=False)
    if pool_ids is not None:
        if not pool_ids:
            return counts
        agents, assignments, pooled_profiles = (
            agents.filter(pool_id__in=pool_ids), assignments.filter(pool_id__in=pool_ids),
            pooled_profiles.filter(pool_id__in=pool_ids),
        )
        counts = {pk: PoolCounts() for pk in pool_ids}
    for pool_id, name, status, n, capacity, healthy in (
        agents.values_list("pool_id", "pool__name", "status")
        .annotate(n=Count("pk"), capacity=Sum("capacity"),
                  healthy=Count("pk", filter=Q(health_score__gte=F("pool__min_health_score"))))
        .order_by()
    ):
        row = counts.setdefault(pool_id, PoolCounts())
        row.name = name
        row.agents += n
        row.agents_by_status[status] = n
        if status in _HOLDING_AGENT_STATUSES:
            row.capacity += capacity or 0
        if status == Agent.Status.ACTIVE:
            row.healthy += healthy
    for pool_id, name, status, n, waiting, queued in (
        assignments.values_list("pool_id", "pool__name", "status")
        .annotate(n=Count("pk"), waiting=Count("pk", filter=waiting_q()), queued=Count("pk", filter=queued_q()))
        .order_by()
    ):
        row = counts.setdefault(pool_id, PoolCounts())
        row.name = name
        row.live += n
        row.live_by_status[status] = n
        if status in Assignment.HELD_STATUSES:
            row.held += n
        row.waiting += waiting
        row.queued += queued
    if profiles:
        for pool_id, n in pooled_profiles.values_list("pool_id").annotate(n=Count("pk")).order_by():
            counts.setdefault(pool_id, PoolCounts()).profiles = n
    return counts


def pool_list():
    return AgentPool.objects.all()


def pools_attach_counts(pools: list[AgentPool]) -> None:
    """Set `pool.counts` (a `PoolCounts`, with its queued tasks) on each pool."""
    counts = pool_counts([p.pk for p in pools], profiles=True)
    queued = dict(
        Task.objects.filter(pool_id__in=[p.pk for p in pools], status=Task.Status.QUEUED)
        .values_list("pool_id").annotate(n=Count("pk")).order_by()
    ) if pools else {}
    for pool in pools:
        pool.counts = counts.get(pool.pk, PoolCounts())
        pool.counts.queued_tasks = queued.get(pool.pk, 0)


def older_than_pool_timeout(queryset, *, since_field: str, timeout_field: str, now):
    """The rows of `queryset` (of a model with a `pool`) whose `since_field` is older than `now`
    minus their pool's `timeout_field` (seconds). One query on PostgreSQL (interval arithmetic in
    SQL); SQLite cannot multiply an interval, so there (embedded mode, a few pools) it is a
    condition per pool."""
    if connection.vendor == "postgresql":
        deadline = ExpressionWrapper(
            F(since_field) + F(f"pool__{timeout_field}") * Value(timedelta(seconds=1)), output_field=DateTimeField()
        )
        return queryset.annotate(_deadline=deadline).filter(_deadline__lt=now)
    condition = Q(pk__in=[])
    for pool_id, seconds in AgentPool.objects.values_list("pk", timeout_field):
        condition |= Q(pool_id=pool_id, **{f"{since_field}__lt": now - timedelta(seconds=seconds)})
    return queryset.filter(condition)


# --- Tasks ------------------------------------------------------------------------------------------


def task_list():
    return Task.objects.select_related("pool", "agent", "assignment")


def _by_priority(tasks: list[Task]) -> list[Task]:
    return sorted(tasks, key=lambda t: (Task.PRIORITY_RANK[t.priority], t.queue_order, t.pk))


# A pool by its name (every column), compiled once: a registration reads it first, and compiling the
# select cost more than running it (issue 15, the coordinator comparison's register).
_POOL_FIELDS = tuple(f.name for f in AgentPool._meta.concrete_fields)
_POOL_BY_NAME = CompiledQuery(
    lambda name: AgentPool.objects.filter(name=name).values_list(*_POOL_FIELDS), sentinels=("\x00pool-slot",)
)


def pool_by_name(name: str) -> AgentPool | None:
    found = _POOL_BY_NAME.objects(AgentPool, _POOL_FIELDS, name)
    return found[0] if found else None


# Most heartbeats come from agents holding no task: a probe compiled once (config/sql.py) spares
# them compiling the three-table select below, which cost more than the rest of the reply.
_HAS_OPEN_TASKS = CompiledQuery(
    lambda pk: Task.objects.filter(agent_id=pk, status__in=Task.HELD_STATUSES), sentinels=(-7_000_000_001,), kind=EXISTS
)


def agent_has_open_tasks(agent_pk: int) -> bool:
    """Does this agent hold an assigned or running task? (The heartbeat's probe, as a statement of its own.)"""
    return _HAS_OPEN_TASKS.exists(agent_pk)


def agent_open_tasks_probe(agent_pk: int) -> tuple[str, list]:
    """(SQL, params) of the probe "does this agent hold an open task?", for the heartbeat, which
    sends it inside its read of the agent's assignments (PostgreSQL; one round trip for both)."""
    return _HAS_OPEN_TASKS.sql(agent_pk)


def agent_open_tasks(agent, *, any_open: bool | None = None) -> list[Task]:
    """The agent's assigned and running tasks, highest priority first (its heartbeat reply).
    `any_open`: the probe's answer when the caller has it (`agent_open_tasks_probe`)."""
    if any_open is None:
        any_open = _HAS_OPEN_TASKS.exists(agent.pk)
    if not any_open:
        return []
    return _by_priority(list(task_list().filter(agent_id=agent.pk, status__in=Task.HELD_STATUSES)))


def queue_sizes(*, pool: str | None = None) -> dict:
    """Queued tasks per priority, overall and per pool: `{"queues": {p: n}, "pools": {name: {p: n}}}`.
    One grouped query."""
    rows = Task.objects.filter(status=Task.Status.QUEUED)
    if pool is not None:
        rows = rows.filter(pool__name=pool)
    queues = dict.fromkeys(Task.Priority.values, 0)
    pools: dict[str, dict[str, int]] = {}
    for name, priority, n in rows.values_list("pool__name", "priority").annotate(n=Count("pk")).order_by():
        queues[priority] += n
        pools.setdefault(name, dict.fromkeys(Task.Priority.values, 0))[priority] = n
    return {"queues": queues, "pools": dict(sorted(pools.items()))}


def task_status(*, pool: str | None = None) -> dict:
    """Counts by status, how long placement took on average, the success rate and per-agent counts
    (`GET /api/tasks/status`). Three grouped queries."""
    rows = Task.objects.all()
    if pool is not None:
        rows = rows.filter(pool__name=pool)
    by_status = dict.fromkeys(Task.Status.values, 0)
    for status, n in rows.values_list("status").annotate(n=Count("pk")).order_by():
        by_status[status] = n
    wait = rows.filter(assigned_at__isnull=False).aggregate(
        avg=Avg(ExpressionWrapper(F("assigned_at") - F("submitted_at"), output_field=DurationField()))
    )["avg"]
    agents: dict[str, dict[str, int]] = {}
    for agent_id, status, n in (
        rows.filter(agent__isnull=False, status__in=["assigned", "running", "completed", "failed"])
        .values_list("agent__agent_id", "status").annotate(n=Count("pk")).order_by()
    ):
        agents.setdefault(agent_id, dict.fromkeys(["assigned", "running", "completed", "failed"], 0))[status] = n
    ended = by_status["completed"] + by_status["failed"]
    return {
        "submitted": sum(by_status.values()),
        **by_status,
        "average_distribution_seconds": round(wait.total_seconds(), 3) if wait is not None else None,
        "success_rate": round(by_status["completed"] / ended, 4) if ended else None,
        "agents": dict(sorted(agents.items())),
    }


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[index], 3)


def queue_stats(*, pool: str | None = None, now=None) -> dict:
    """Per priority, overall and per pool: `size`, `oldest_age_seconds`, `wait_p50_seconds` and
    `wait_p95_seconds` (tasks placed in the last hour), `assigned_last_minute`."""
    now = now or timezone.now()
    rows = Task.objects.all()
    if pool is not None:
        rows = rows.filter(pool__name=pool)

    def empty():
        return {"size": 0, "oldest_age_seconds": None, "wait_p50_seconds": None, "wait_p95_seconds": None,
                "assigned_last_minute": 0}

    overall = {p: empty() for p in Task.Priority.values}
    pools: dict[str, dict] = {}
    for name, priority, n, oldest in (
        rows.filter(status=Task.Status.QUEUED).values_list("pool__name", "priority")
        .annotate(n=Count("pk"), oldest=Min("submitted_at")).order_by()
    ):
        for stats in (overall[priority], pools.setdefault(name, {p: empty() for p in Task.Priority.values})[priority]):
            stats["size"] += n
            age = round((now - oldest).total_seconds(), 3)
            stats["oldest_age_seconds"] = max(stats["oldest_age_seconds"] or 0, age)
    waits: dict[tuple[str | None, str], list[float]] = {}
    minute_ago = now - timedelta(minutes=1)
    # Bounded: the last hour's placements, newest first, at most 20,000 rows.
    for name, priority, submitted, assigned in (
        rows.filter(assigned_at__gte=now - timedelta(hours=1))
        .values_list("pool__name", "priority", "submitted_at", "assigned_at").order_by("-assigned_at")[:20_000]
    ):
        wait = (assigned - submitted).total_seconds()
        waits.setdefault((None, priority), []).append(wait)
        waits.setdefault((name, priority), []).append(wait)
        if assigned >= minute_ago:
            overall[priority]["assigned_last_minute"] += 1
            pools.setdefault(name, {p: empty() for p in Task.Priority.values})[priority]["assigned_last_minute"] += 1
    for (name, priority), values in waits.items():
        stats = overall[priority] if name is None else pools.setdefault(name, {p: empty() for p in Task.Priority.values})[priority]
        values.sort()
        stats["wait_p50_seconds"] = _percentile(values, 0.5)
        stats["wait_p95_seconds"] = _percentile(values, 0.95)
    return {"queues": overall, "pools": dict(sorted(pools.items()))}
