"""Which agent gets the next piece of work: pure decisions over plain data, no database.

A whole failover or rebalancing pass is planned here in memory (`plan_moves`), then the service
persists it — so every strategy is unit-testable on its own.
"""

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Candidate:
    key: int
    agent_id: str
    health_score: float
    live: int
    capacity: int
    weight: float = 1.0
    priority: int = 0
    region: str = ""
    cpu: float = 0.0  # 0..1
    memory: float = 0.0  # 0..1
    last_assigned_at: datetime | None = None
    # What the agent offers, for work with requirements (tasks).
    agent_type: str = ""
    capabilities: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    @property
    def has_room(self) -> bool:
        return self.live < self.capacity

    @property
    def utilization(self) -> float:
        return self.live / self.capacity if self.capacity else 1.0


def _least_connections(c: Candidate, region: str):
    # The least-loaded first; among equals the healthiest, then the higher priority.
    return (c.utilization, c.live, -c.health_score, -c.priority, c.agent_id)


def _round_robin(c: Candidate, region: str):
    # The agent that has waited longest since it was last handed work.
    return (c.last_assigned_at is not None, c.last_assigned_at or datetime.min, c.agent_id)


def _weighted(c: Candidate, region: str):
    return ((c.live + 1) / c.weight if c.weight > 0 else float("inf"), -c.health_score, c.agent_id)


def _resource_based(c: Candidate, region: str):
    return (-c.health_score, c.cpu + c.memory, c.utilization, c.agent_id)


def _geographic(c: Candidate, region: str):
    return (0 if region and c.region == region else 1, *_least_connections(c, region))


_SORT_KEYS = {
    "least_connections": _least_connections,
    "round_robin": _round_robin,
    "weighted_round_robin": _weighted,
    "resource_based": _resource_based,
    "geographic": _geographic,
}


def choose_agent(
    candidates: list[Candidate],
    *,
    strategy: str,
    min_health_score: float,
    region: str = "",
    rng: random.Random | None = None,
) -> Candidate | None:
    """The agent that should take one more assignment, or None when nobody eligible has room."""
    eligible = [c for c in candidates if c.has_room and c.health_score >= min_health_score]
    if strategy == "weighted_round_robin":
        eligible = [c for c in eligible if c.weight > 0]
    if not eligible:
        return None
    if strategy == "random":
        return (rng or random).choice(sorted(eligible, key=lambda c: c.agent_id))
    key = _SORT_KEYS.get(strategy, _least_connections)
    return min(eligible, key=lambda c: key(c, region))


@dataclass(frozen=True)
class Requirements:
    """What a piece of work needs of its agent (a task's `requirements`): all of `capabilities` and
    `tags`, and the `agent_type` and `region` when given."""

    capabilities: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    agent_type: str = ""
    region: str = ""

    def met_by(self, c: Candidate) -> bool:
        return (
            self.capabilities <= c.capabilities
            and self.tags <= c.tags
            and (not self.agent_type or self.agent_type == c.agent_type)
            and (not self.region or self.region == c.region)
        )


@dataclass(frozen=True)
class Work:
    key: int
    region: str = ""
    needs: Requirements | None = None  # None: any agent will do


def plan_moves(
    work: list[Work],
    candidates: list[Candidate],
    *,
    strategy: str,
    min_health_score: float,
    now: datetime,
    rng: random.Random | None = None,
) -> list[tuple[Work, Candidate | None]]:
    """Give each piece of work (in the order given) an agent, or None when none has room (or none
    meets its requirements — it does not hold up the work behind it). Each pair holds the chosen
    agent as it is after that choice (one more live, handed work at that turn).

    Each choice counts against the chosen agent's room before the next one is made, and is stamped
    one microsecond after the previous one: with one shared `now`, every agent handed work in this
    pass would tie, and round robin would fall back to agent-id order after the first cycle. The
    stamps are what the service stores, so the next pass goes on around the circle too.
    """
    pool = {c.key: c for c in candidates}
    plan: list[tuple[Work, Candidate | None]] = []
    for item in work:
        options = [c for c in pool.values() if item.needs is None or item.needs.met_by(c)]
        chosen = choose_agent(
            options, strategy=strategy, min_health_score=min_health_score, region=item.region, rng=rng
        )
        if chosen is not None:
            tick = now + timedelta(microseconds=len(plan))
            chosen = replace(chosen, live=chosen.live + 1, last_assigned_at=tick)
            pool[chosen.key] = chosen
        plan.append((item, chosen))
    return plan
