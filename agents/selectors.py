"""Reads of agents. No writes here."""

from django.db import connection

from agents.models import Agent
from assignments.models import Assignment
from config.sql import CompiledQuery
from pools.models import AgentPool


def agent_list():
    return Agent.objects.select_related("pool")


# One agent with its pool's name, compiled once (config/sql.py): get-agent is an agent's most common
# read, and compiling this select cost more than running it.
_AGENT_FIELDS = tuple(f.name for f in Agent._meta.concrete_fields)
_ONE_AGENT = CompiledQuery(
    lambda agent_id: Agent.objects.filter(agent_id=agent_id).values_list(*_AGENT_FIELDS, "pool__name"),
    sentinels=("\x00agent-slot",),
)


def agent_get(agent_id: str) -> Agent | None:
    """The agent (all its fields) with `pool` loaded as far as its id and name; None if there is none."""
    found = _with_pool_names(_ONE_AGENT.objects(Agent, _AGENT_FIELDS, agent_id))
    return found[0] if found else None


def _with_pool_names(agents: list[Agent]) -> list[Agent]:
    """Agents read with their pool's name as the extra column: `pool` loaded as far as id and name."""
    pools = {}  # one object per pool: a discover's hundred agents are mostly of one or two
    for agent in agents:
        key = (agent.pool_id, agent._extra[0])
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = AgentPool.from_db(agent._state.db, ["id", "name"], list(key))
        agent.pool = pool
    return agents


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
    given = _given(agent_type, status, capabilities, pool, region, min_health_score)
    query = _discover_statement(given, limit)
    if query is None:
        return list(_discover_queryset(given)[:limit])
    return _with_pool_names(query.objects(Agent, _AGENT_FIELDS, *given.values()))


def agent_discover_sql(*, limit: int = 100, **criteria) -> tuple[str, list] | None:
    """`agent_discover`'s statement for these criteria (its arguments), filled in, for a caller that
    reads its rows in a statement of its own: (sql, params), its columns the agent's fields in model
    order and then the pool's `name`, healthiest first. None where there is no such statement
    (SQLite; an unusual limit)."""
    given = _given(**criteria)
    query = _discover_statement(given, limit)
    return None if query is None else query.sql(*given.values())


def agent_get_sql(agent_id: str) -> tuple[str, list] | None:
    """`agent_get`'s statement, filled in (as `agent_discover_sql`); None on SQLite."""
    return _ONE_AGENT.sql(agent_id) if connection.vendor == "postgresql" else None


def _given(agent_type=None, status=None, capabilities=None, pool=None, region=None, min_health_score=None) -> dict:
    given = {
        "agent_type": agent_type or None, "status": status or None, "pool": pool or None, "region": region or None,
        "min_health_score": min_health_score, "capabilities": list(capabilities) if capabilities else None,
    }
    return {name: value for name, value in given.items() if value is not None}


def _discover_statement(given: dict, limit: int) -> CompiledQuery | None:
    """One compiled statement per combination of criteria and limit (config/sql.py); None on SQLite
    and once _DISCOVER_SHAPES are kept (an unusual limit: not worth a statement kept)."""
    if connection.vendor != "postgresql":
        return None
    shape = (tuple(given), limit)
    query = _DISCOVER.get(shape)
    if query is None and len(_DISCOVER) >= _DISCOVER_SHAPES:
        return None
    if query is None:
        names = tuple(given)
        query = _DISCOVER[shape] = CompiledQuery(
            lambda *values: _discover_queryset(dict(zip(names, values, strict=True)))[:limit]
            .values_list(*_AGENT_FIELDS, "pool__name"),
            sentinels=tuple(_SLOTS[name] for name in names),
        )
    return query


_DISCOVER: dict[tuple, CompiledQuery] = {}
_DISCOVER_SHAPES = 256  # statements kept at most (criteria combinations × limits asked for)
_SLOTS = {
    "agent_type": "\x00type-slot", "status": "\x00status-slot", "pool": "\x00pool-slot", "region": "\x00region-slot",
    "min_health_score": -7_000_000_001.5, "capabilities": ["\x00capability-slot"],
}


def _discover_queryset(given: dict):
    qs = agent_list()
    if "agent_type" in given:
        qs = qs.filter(agent_type=given["agent_type"])
    if "status" in given:
        qs = qs.filter(status=given["status"])
    if "pool" in given:
        qs = qs.filter(pool__name=given["pool"])
    if "region" in given:
        qs = qs.filter(region=given["region"])
    if "min_health_score" in given:
        qs = qs.filter(health_score__gte=given["min_health_score"])
    qs = qs.order_by("-health_score", "agent_id")
    capabilities = given.get("capabilities")
    if capabilities and connection.vendor == "postgresql":
        # jsonb containment (@>), served by the GIN index: every wanted capability is in the list.
        qs = qs.filter(capabilities__contains=capabilities)
    elif capabilities:
        # SQLite (embedded mode) has no JSON containment: one json_each() test per capability,
        # still in the database, so the limit applies to matching agents only.
        for capability in dict.fromkeys(capabilities):
            qs = qs.extra(
                where=["EXISTS (SELECT 1 FROM json_each(agents_agent.capabilities) AS c WHERE c.value = %s)"],
                params=[capability],
            )
    return qs


def agent_assignments(agent: Agent, statuses: list[str] | None):
    qs = Assignment.objects.filter(agent=agent).select_related("profile", "pool", "agent")
    if statuses:
        qs = qs.filter(status__in=statuses)
    return qs.order_by("-assigned_at")
