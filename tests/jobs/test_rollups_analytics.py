"""The rollup columns the analytics read: waits and wait time, failovers per agent, successes."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.jobs import agents_mark_overdue_stale
from agents.models import Agent
from assignments.jobs import usage_rollup_recent
from assignments.models import Assignment, Event, UsageRollup
from assignments.services import assignment_release
from config.actors import Actor
from pools.jobs import pools_rebalance_all
from tests.factories import AgentFactory
from tests.jobs.conftest import ago, set_scene


@override_settings(TETHER_ROLLUP_HOURS_BACK=0)
def test_a_failover_through_waiting_counts_failovers_per_losing_agent_and_the_wait(fleet, job_actor):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    held = fleet.take(fleet.profiles[0], fleet.a)
    done = fleet.take(fleet.profiles[1], fleet.b)
    assignment_release(assignment_id=done.assignment_id, actor=Actor.for_agent("agent-b"))
    Agent.objects.filter(pk=fleet.a.pk).update(last_heartbeat=ago(60))
    Agent.objects.filter(pk=fleet.b.pk).update(last_heartbeat=ago(50))
    agents_mark_overdue_stale(actor=job_actor)  # a → b, then b → waiting
    AgentFactory(pool=fleet.pool, agent_id="agent-c")
    pools_rebalance_all(actor=job_actor)  # waiting → c
    assignment_release(assignment_id=held.assignment_id, actor=Actor.for_agent("agent-c"))
    moves = list(Event.objects.filter(type="assignment.reassigned", assignment_id=held.assignment_id).order_by("seq"))
    for event, minute in zip(moves, (10, 15, 20)):
        Event.objects.filter(seq=event.seq).update(occurred_at=hour + timedelta(minutes=minute))
    set_scene(Assignment, held.pk, assigned_at=hour, released_at=hour + timedelta(minutes=30))

    usage_rollup_recent(actor=job_actor, now=hour + timedelta(minutes=40))

    rows = {(r.scope, r.key): r for r in UsageRollup.objects.filter(hour=hour)}
    profile, pool = rows[("profile", "prof-0")], rows[("pool", fleet.pool.name)]
    assert (profile.failovers, profile.waits, round(profile.wait_seconds)) == (3, 1, 300)
    assert (pool.failovers, pool.waits, round(pool.wait_seconds)) == (3, 1, 300)
    assert (rows[("agent", "agent-a")].failovers, rows[("agent", "agent-b")].failovers) == (1, 1)
    assert rows[("agent", "agent-c")].failovers == 0
    assert rows[("agent", "agent-c")].assignments == 1  # handed to it by the rebalance
    # Released by their own agent: prof-1 by agent-b, prof-0 by agent-c (after the failovers).
    assert (rows[("agent", "agent-b")].successes, rows[("agent", "agent-c")].successes) == (1, 1)
    assert (profile.successes, pool.successes) == (1, 2)


@override_settings(TETHER_ROLLUP_HOURS_BACK=1)
def test_requests_queued_for_a_profile_are_waits_not_takes_and_their_time_is_waiting(db):
    from assignments.analytics import assignment_metrics
    from assignments.jobs import waits_sweep
    from assignments.takes import assignment_take
    from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

    pool = make_pool("waits")
    for name in ("holder", "w1", "w2"):
        make_agent(pool, name, capacity=3)
    make_profile("p1", pool=pool)

    def take(agent_id, **kw):
        return assignment_take(agent_id=agent_id, profile_id="p1", actor=as_agent(agent_id), **kw).assignments[0]

    held = take("holder")
    served = take("w1", wait_seconds=60)
    never = take("w2", wait_seconds=1)
    waits_sweep(actor=OPERATOR, now=timezone.now() + timedelta(seconds=5))  # w2's wait runs out
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))  # w1 is served
    never.refresh_from_db()
    handed = Event.objects.get(assignment_id=served.assignment_id, type="assignment.status_changed",
                               from_status="pending", to_status="active")

    usage_rollup_recent(actor=OPERATOR)
    totals = {}
    for r in UsageRollup.objects.filter(key__in=["p1", "waits", "w1", "w2"]):
        row = totals.setdefault((r.scope, r.key), {"assignments": 0, "waits": 0, "wait": 0.0, "expirations": 0, "busy": 0.0})
        row["assignments"] += r.assignments
        row["waits"] += r.waits
        row["wait"] += r.wait_seconds
        row["expirations"] += r.expirations
        row["busy"] += r.busy_seconds
    profile = totals[("profile", "p1")]
    assert (profile["assignments"], profile["waits"], profile["expirations"]) == (2, 2, 0)
    expected_wait = (never.released_at - never.assigned_at).total_seconds() + handed.data["waited_seconds"]
    assert profile["wait"] == pytest.approx(expected_wait, abs=0.01)
    assert totals[("pool", "waits")]["wait"] == pytest.approx(expected_wait, abs=0.01)
    assert totals[("agent", "w1")]["assignments"] == 1
    w2 = totals.get(("agent", "w2"), {"assignments": 0, "busy": 0.0, "expirations": 0})
    assert (w2["assignments"], w2["busy"], w2["expirations"]) == (0, 0.0, 0)

    now = timezone.now()
    metrics = assignment_metrics(since=now - timedelta(hours=1), until=now + timedelta(seconds=1))
    assert (metrics["total_assignments"], metrics["failed_assignments"]) == (2, 0)
    assert "w2" not in metrics["agent_efficiency_scores"]
