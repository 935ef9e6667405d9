"""Reads of agents. No writes here."""

from django.db import connection

from agents.models import Agent
from assignments.models import Assignment


def agent_list():
    return Agent.objects.select_related("pool")


def agent_get(agent_id: str) -> Agent | None:
    return agent_list().filter(agent_id=agent_id).first()


def agent_discover(
    *,
    agent_type: str | None = None,
    status: str | None = None,
    capabilities: list[str] | None = None,
    pool: str | None = None,
    region: str | None = None,
    min_health_score: float | None = None,
    limit: int = 100,
) -> list[Agent]:
    """Agents matching every given criterion; `capabilities` must all be present. Healthiest first."""
    qs = agent_list()
    if agent_type:
        qs = qs.filter(agent_type=agent_type)
    if status:
        qs = qs.filter(status=status)
    if pool:
        qs = qs.filter(pool__name=pool)
    if region:
        qs = qs.filter(region=region)
    if min_health_score is not None:
        qs = qs.filter(health_score__gte=min_health_score)
    qs = qs.order_by("-health_score", "agent_id")
    if capabilities and connection.vendor == "postgresql":
        # jsonb containment (@>), served by the GIN index: every wanted capability is in the list.
        qs = qs.filter(capabilities__contains=list(capabilities))
    elif capabilities:
        # SQLite (embedded mode) has no JSON containment: one json_each() test per capability,
        # still in the database, so the limit applies to matching agents only.
        for capability in dict.fromkeys(capabilities):
            qs = qs.extra(
                where=["EXISTS (SELECT 1 FROM json_each(agents_agent.capabilities) AS c WHERE c.value = %s)"],
                params=[capability],
            )
    return list(qs[:limit])


def agent_assignments(agent: Agent, statuses: list[str] | None):
    qs = Assignment.objects.filter(agent=agent).select_related("profile", "pool", "agent")
    if statuses:
        qs = qs.filter(status__in=statuses)
    return qs.order_by("-assigned_at")
