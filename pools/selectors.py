"""Reads of pools. No writes here.

`pool_counts` is the one definition of a pool's counts: the API (`GET /api/pools`), the dashboard
(`/pools/`, the overview) and the admin's pool list all show these numbers.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Q, Sum, Value

from agents.models import Agent
from assignments.models import Assignment, Profile, live_q, queued_q, waiting_q
from pools.models import AgentPool

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
    """Set `pool.counts` (a `PoolCounts`) on each pool."""
    counts = pool_counts([p.pk for p in pools], profiles=True)
    for pool in pools:
        pool.counts = counts.get(pool.pk, PoolCounts())


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
