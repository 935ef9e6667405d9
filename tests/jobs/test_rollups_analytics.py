"""The rollup columns the analytics read: waits and wait time, failovers per agent, successes."""

from datetime import timedelta

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
