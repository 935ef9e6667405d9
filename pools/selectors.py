"""Reads of pools. No writes here."""

from django.db.models import Count

from agents.models import Agent
from assignments.models import Assignment, Profile
from pools.models import AgentPool


def pool_list():
    return AgentPool.objects.all()


def pools_attach_counts(pools: list[AgentPool]) -> None:
    """Set `pool.counts` on each pool: agents by status, live and waiting assignments, profiles.
    Three grouped queries whatever the number of pools."""
    ids = [p.pk for p in pools]
    if not ids:
        return
    agents: dict[int, dict[str, int]] = {}
    for pool_id, status, n in (
        Agent.objects.filter(pool_id__in=ids).values_list("pool_id", "status").annotate(n=Count("pk")).order_by()
    ):
        agents.setdefault(pool_id, {})[status] = n
    live: dict[int, dict[str, int]] = {}
    for pool_id, status, n in (
        Assignment.objects.filter(pool_id__in=ids, status__in=Assignment.LIVE_STATUSES)
        .values_list("pool_id", "status")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        live.setdefault(pool_id, {})[status] = n
    profiles = dict(
        Profile.objects.filter(pool_id__in=ids).values_list("pool_id").annotate(n=Count("pk")).order_by()
    )
    for pool in pools:
        by_status = {status: agents.get(pool.pk, {}).get(status, 0) for status in Agent.Status.values}
        assignments = live.get(pool.pk, {})
        pool.counts = {
            "agents": sum(by_status.values()),
            "agents_by_status": by_status,
            "live_assignments": sum(assignments.values()),
            "waiting_assignments": assignments.get(Assignment.Status.PENDING, 0),
            "profiles": profiles.get(pool.pk, 0),
        }
