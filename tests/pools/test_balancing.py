"""Strategies are pure functions: no database."""

import random
from datetime import datetime, timedelta, timezone

from pools.balancing import Candidate, Requirements, Work, choose_agent, plan_moves

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def c(key, **kw):
    defaults = dict(agent_id=f"a{key}", health_score=1.0, live=0, capacity=4)
    defaults.update(kw)
    return Candidate(key=key, **defaults)


def test_least_connections_prefers_lowest_utilization_then_health():
    chosen = choose_agent([c(1, live=2), c(2, live=1, health_score=0.7), c(3, live=1, health_score=0.9)],
                          strategy="least_connections", min_health_score=0.5)
    assert chosen.key == 3


def test_agents_without_room_or_below_min_health_are_never_chosen():
    candidates = [c(1, live=4), c(2, health_score=0.4)]
    assert choose_agent(candidates, strategy="least_connections", min_health_score=0.5) is None
    assert choose_agent(candidates, strategy="random", min_health_score=0.5) is None


def test_round_robin_picks_the_longest_waiting_agent():
    chosen = choose_agent(
        [c(1, last_assigned_at=NOW), c(2, last_assigned_at=NOW - timedelta(minutes=5)), c(3, last_assigned_at=None)],
        strategy="round_robin", min_health_score=0.0)
    assert chosen.key == 3


def test_weighted_prefers_heavier_agents_and_skips_zero_weight():
    chosen = choose_agent([c(1, weight=1.0, live=1), c(2, weight=4.0, live=2), c(3, weight=0.0)],
                          strategy="weighted_round_robin", min_health_score=0.0)
    assert chosen.key == 2


def test_resource_based_prefers_healthiest_then_least_pressure():
    chosen = choose_agent([c(1, health_score=0.9, cpu=0.1), c(2, health_score=0.95, cpu=0.8), c(3, health_score=0.95, cpu=0.2)],
                          strategy="resource_based", min_health_score=0.0)
    assert chosen.key == 3


def test_geographic_prefers_the_same_region():
    chosen = choose_agent([c(1, region="eu"), c(2, region="us", live=0), c(3, region="us", live=1)],
                          strategy="geographic", min_health_score=0.0, region="us")
    assert chosen.key == 2


def test_random_is_reproducible_with_a_seeded_rng():
    candidates = [c(i) for i in range(10)]
    first = choose_agent(candidates, strategy="random", min_health_score=0.0, rng=random.Random(7))
    second = choose_agent(candidates, strategy="random", min_health_score=0.0, rng=random.Random(7))
    assert first == second


def test_plan_counts_each_choice_against_the_agents_room():
    plan = plan_moves([Work(key=i) for i in range(5)], [c(1, capacity=2), c(2, capacity=1, live=0)],
                      strategy="least_connections", min_health_score=0.0, now=NOW)
    chosen = [agent.key if agent else None for _, agent in plan]
    assert chosen.count(1) == 2 and chosen.count(2) == 1 and chosen.count(None) == 2
    assert chosen[-2:] == [None, None]


def test_round_robin_goes_around_the_circle_after_the_first_cycle():
    # Issue 10, item 13: with one shared timestamp per pass, ties after the first cycle fell to
    # agent-id order (12 drained assignments over 3 agents went 6/5/1).
    agents = [c(1, capacity=20), c(2, capacity=20), c(3, capacity=20)]
    plan = plan_moves([Work(key=i) for i in range(12)], agents, strategy="round_robin", min_health_score=0.0, now=NOW)
    chosen = [agent.key for _, agent in plan]
    assert chosen == [1, 2, 3] * 4


def test_round_robin_carries_its_turn_into_the_next_pass():
    agents = {a.key: a for a in (c(1, capacity=20), c(2, capacity=20), c(3, capacity=20))}
    first = plan_moves([Work(key=0), Work(key=1)], list(agents.values()), strategy="round_robin",
                       min_health_score=0.0, now=NOW)
    for _, agent in first:  # what the service stores: each agent's stamp from the plan
        agents[agent.key] = agent
    second = plan_moves([Work(key=i) for i in range(4)], list(agents.values()), strategy="round_robin",
                        min_health_score=0.0, now=NOW + timedelta(seconds=1))
    assert [agent.key for _, agent in second] == [3, 1, 2, 3]


def test_round_robin_cycles_through_the_agents_within_one_pass():
    plan = plan_moves([Work(key=i) for i in range(6)], [c(1), c(2), c(3)], strategy="round_robin",
                      min_health_score=0.0, now=NOW)
    assert [chosen.key for _, chosen in plan] == [1, 2, 3, 1, 2, 3]


def test_work_with_requirements_goes_only_to_agents_that_meet_them():
    gpu = Requirements(capabilities=frozenset({"gpu"}))
    eu = Requirements(region="eu", agent_type="worker", tags=frozenset({"residential"}))
    candidates = [
        c(1, capabilities=frozenset({"chrome"}), region="eu", agent_type="worker", tags=frozenset({"residential"})),
        c(2, capabilities=frozenset({"chrome", "gpu"}), region="us", agent_type="worker"),
    ]
    plan = plan_moves([Work(key=1, needs=gpu), Work(key=2, needs=eu), Work(key=3, needs=Requirements(region="asia"))],
                      candidates, strategy="least_connections", min_health_score=0.0, now=NOW)
    assert [(w.key, chosen.key if chosen else None) for w, chosen in plan] == [(1, 2), (2, 1), (3, None)]
