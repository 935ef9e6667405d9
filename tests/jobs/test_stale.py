"""The staleness sweep: overdue agents go stale and their assignments fail over, once."""

import pytest

from agents.jobs import agents_mark_overdue_stale
from agents.models import Agent
from agents.services import agent_heartbeat
from assignments.models import Assignment, Event
from config.actors import Actor
from tests.factories import AgentFactory
from tests.jobs.conftest import ago, refresh, set_scene


def test_overdue_agent_goes_stale_and_its_assignment_fails_over_with_a_larger_token(fleet, job_actor):
    held = fleet.take(fleet.profiles[0], fleet.a)
    token = held.fencing_token
    set_scene(Agent, fleet.a.pk, last_heartbeat=ago(6))  # the pool's timeout is 5 s

    assert agents_mark_overdue_stale(actor=job_actor) == {"marked_stale": 1}
    a = refresh(fleet.a)
    assert a.status == Agent.Status.STALE
    assert a.health_score == 0.0
    moved = refresh(held)
    assert moved.agent_id == fleet.b.pk
    assert moved.status == Assignment.Status.ACTIVE
    assert moved.fencing_token > token
    assert refresh(fleet.b).status == Agent.Status.ACTIVE
    assert list(Event.objects.filter(agent_id="agent-a", type="agent.stale").values_list("actor", flat=True)) == [
        "system:job-under-test"]

    events = Event.objects.count()
    assert agents_mark_overdue_stale(actor=job_actor) == {"marked_stale": 0}
    assert Event.objects.count() == events


def test_agent_within_its_heartbeat_timeout_is_left_alone(fleet, job_actor):
    set_scene(Agent, fleet.a.pk, last_heartbeat=ago(4))
    assert agents_mark_overdue_stale(actor=job_actor) == {"marked_stale": 0}
    assert refresh(fleet.a).status == Agent.Status.ACTIVE


def test_inactive_and_stale_agents_are_not_marked_again(fleet, job_actor):
    AgentFactory(pool=fleet.pool, status=Agent.Status.INACTIVE, last_heartbeat=ago(600))
    AgentFactory(pool=fleet.pool, status=Agent.Status.STALE, last_heartbeat=ago(600))
    assert agents_mark_overdue_stale(actor=job_actor) == {"marked_stale": 0}


def test_stale_agent_heartbeating_again_is_active_and_told_to_drop_what_moved(fleet, job_actor):
    held = fleet.take(fleet.profiles[0], fleet.a)
    set_scene(Agent, fleet.a.pk, last_heartbeat=ago(60))
    agents_mark_overdue_stale(actor=job_actor)

    reply = agent_heartbeat(agent_id="agent-a", actor=Actor.for_agent("agent-a"), reported=[held.assignment_id])
    assert reply.agent.status == Agent.Status.ACTIVE
    assert reply.revoked == [held.assignment_id]


def test_failover_leaves_the_assignment_waiting_when_no_agent_of_the_pool_has_room(fleet, job_actor):
    held = fleet.take(fleet.profiles[0], fleet.a)
    set_scene(Agent, fleet.a.pk, last_heartbeat=ago(60))
    set_scene(Agent, fleet.b.pk, last_heartbeat=ago(60))

    assert agents_mark_overdue_stale(actor=job_actor) == {"marked_stale": 2}
    waiting = refresh(held)
    assert (waiting.status, waiting.agent_id) == (Assignment.Status.PENDING, None)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_mark_each_agent_stale_and_move_each_assignment_once(fleet, job_actor, run_in_threads):
    survivors = [AgentFactory(pool=fleet.pool, capacity=10) for _ in range(2)]
    lost = [fleet.a, fleet.b] + [AgentFactory(pool=fleet.pool, capacity=4) for _ in range(2)]
    from tests.factories import ProfileFactory

    held = [fleet.take(ProfileFactory(pool=fleet.pool), agent) for agent in lost for _ in range(2)]
    tokens = {a.pk: a.fencing_token for a in held}
    for agent in lost:
        set_scene(Agent, agent.pk, last_heartbeat=ago(30))

    results = run_in_threads(4, lambda i: agents_mark_overdue_stale(actor=job_actor))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["marked_stale"] for r in results) == len(lost)
    assert Event.objects.filter(type="agent.stale").count() == len(lost)
    assert Event.objects.filter(type="assignment.reassigned").count() == len(held)
    survivor_pks = {a.pk for a in survivors}
    for assignment in held:
        moved = refresh(assignment)
        assert moved.agent_id in survivor_pks
        assert moved.fencing_token == tokens[moved.pk] + 1
