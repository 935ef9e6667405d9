"""The rebalancing sweep, and the rebalance that follows a release."""

import pytest

from agents.jobs import agents_mark_overdue_stale
from agents.models import Agent
from assignments.models import Assignment, Event
from assignments.services import assignment_release
from config.actors import Actor
from pools.jobs import pools_rebalance_all
from tests.factories import AgentFactory, ProfileFactory
from tests.jobs.conftest import ago, refresh, set_scene

S = Assignment.Status


def _strand(fleet, job_actor, n=1):
    """Leave `n` assignments waiting: both agents go stale with them."""
    held = [fleet.take(fleet.profiles[i], fleet.a) for i in range(n)]
    for agent in (fleet.a, fleet.b):
        set_scene(Agent, agent.pk, last_heartbeat=ago(60))
    agents_mark_overdue_stale(actor=job_actor)
    assert all(refresh(a).status == S.PENDING for a in held)
    return held


def test_waiting_assignments_go_to_a_new_agent_of_the_pool_on_the_next_sweep(fleet, job_actor):
    held = _strand(fleet, job_actor, n=2)
    assert pools_rebalance_all(actor=job_actor) == {"placed": 0, "pools": 1, "drained": 0}

    fresh = AgentFactory(pool=fleet.pool, capacity=1)  # a row, not a registration: no rebalance yet
    assert pools_rebalance_all(actor=job_actor) == {"placed": 1, "pools": 1, "drained": 0}
    placed = [refresh(a) for a in held]
    assert sorted(a.status for a in placed) == [S.ACTIVE, S.PENDING]
    assert [a.agent_id for a in placed if a.status == S.ACTIVE] == [fresh.pk]
    assert pools_rebalance_all(actor=job_actor)["placed"] == 0


def test_nothing_waiting_means_nothing_to_do(fleet, job_actor):
    fleet.take(fleet.profiles[0], fleet.a)
    assert pools_rebalance_all(actor=job_actor) == {"placed": 0, "pools": 0, "drained": 0}


def test_an_agent_left_draining_is_drained_to_the_end(fleet, job_actor):
    held = fleet.take(fleet.profiles[0], fleet.a)
    set_scene(Agent, fleet.a.pk, status=Agent.Status.DRAINING)
    assert pools_rebalance_all(actor=job_actor)["drained"] == 1
    assert refresh(fleet.a).status == Agent.Status.INACTIVE
    assert refresh(held).agent_id == fleet.b.pk
    assert Event.objects.filter(type="agent.drained", agent_id="agent-a").count() == 1


def test_a_release_gives_the_freed_room_to_a_waiting_assignment_at_once(
    fleet, job_actor, django_capture_on_commit_callbacks
):
    waiting = _strand(fleet, job_actor, n=1)[0]
    small = AgentFactory(pool=fleet.pool, capacity=1)
    other = ProfileFactory(pool=fleet.pool)
    # The small agent takes another profile itself: it is full, so the waiting one stays waiting.
    mine = fleet.take(other, small)
    assert pools_rebalance_all(actor=job_actor)["placed"] == 0

    with django_capture_on_commit_callbacks(execute=True):
        assignment_release(assignment_id=mine.assignment_id, actor=Actor.for_agent(small.agent_id))

    placed = refresh(waiting)
    assert (placed.status, placed.agent_id) == (S.ACTIVE, small.pk)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_place_each_waiting_assignment_once(fleet, job_actor, run_in_threads):
    held = _strand(fleet, job_actor, n=3)
    AgentFactory(pool=fleet.pool, capacity=2)
    AgentFactory(pool=fleet.pool, capacity=2)

    results = run_in_threads(4, lambda i: pools_rebalance_all(actor=job_actor))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["placed"] for r in results) == 3
    # Each waiting assignment left the waiting state exactly once, to an agent.
    for a in held:
        placed = Event.objects.filter(type="assignment.reassigned", assignment_id=a.assignment_id, from_status="pending")
        assert placed.count() == 1
        assert refresh(a).status == S.ACTIVE


def test_a_pool_whose_agents_are_all_full_costs_the_sweep_a_few_queries_and_no_locks(
    fleet, job_actor, django_assert_num_queries
):
    _strand(fleet, job_actor, n=1)
    full = AgentFactory(pool=fleet.pool, capacity=1)
    fleet.take(ProfileFactory(pool=fleet.pool), full)
    # Which pools wait, those pools, whether any has room, agents left draining.
    with django_assert_num_queries(4):
        assert pools_rebalance_all(actor=job_actor) == {"placed": 0, "pools": 1, "drained": 0}
