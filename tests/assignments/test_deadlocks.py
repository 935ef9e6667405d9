"""Deadlock detection on the wait-for graph: a request closing a cycle is refused (409 deadlock,
event, alert); cycles formed otherwise are broken by the sweep (youngest wait expired)."""

import pytest

from assignments.jobs import wait_cycles_break
from assignments.models import Alert, Assignment, Event
from assignments.services import assignment_release
from assignments.takes import assignment_take
from assignments.waits import Edge, find_cycle, find_path
from config.errors import Deadlock
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

S = Assignment.Status


def take(agent_id, profile_id, **kw):
    return assignment_take(agent_id=agent_id, profile_id=profile_id, actor=as_agent(agent_id), **kw).assignments[0]


def test_find_path_and_cycle_are_plain_functions():
    edges = [Edge("a", "p2", "b"), Edge("b", "p3", "c")]
    assert [e.agent_id for e in find_path(edges, "a", "c")] == ["a", "b"]
    assert find_path(edges, "c", "a") is None
    assert find_cycle(edges) is None
    cycle = find_cycle(edges + [Edge("c", "p1", "a")])
    assert {e.agent_id for e in cycle} == {"a", "b", "c"}


@pytest.fixture
def ring(db):
    pool = make_pool("ring")
    for i in range(1, 4):
        make_agent(pool, f"a{i}", capacity=3)
        make_profile(f"p{i}", pool="ring")
        take(f"a{i}", f"p{i}")
    return pool


def test_two_agents_waiting_for_each_other_the_second_is_refused(ring):
    take("a1", "p2", wait_seconds=60)
    before = Assignment.objects.count()
    with pytest.raises(Deadlock) as exc:
        take("a2", "p1", wait_seconds=60)
    assert exc.value.code == "deadlock"
    assert exc.value.details["cycle"] == [
        {"agent_id": "a2", "waits_for_profile_id": "p1", "held_by_agent_id": "a1"},
        {"agent_id": "a1", "waits_for_profile_id": "p2", "held_by_agent_id": "a2"},
    ]
    assert Assignment.objects.count() == before  # nothing half-written
    event = Event.objects.get(type="assignment.conflict", agent_id="a2")
    assert event.data["reason"] == "deadlock" and len(event.data["cycle"]) == 2
    alert = Alert.objects.get(kind="deadlock")
    assert alert.status == "open" and "a1" in alert.message and "a2" in alert.message


def test_three_agents_in_a_ring_the_one_closing_it_is_refused(ring):
    take("a1", "p2", wait_seconds=60)
    take("a2", "p3", wait_seconds=60)
    with pytest.raises(Deadlock) as exc:
        take("a3", "p1", wait_seconds=60)
    assert [step["agent_id"] for step in exc.value.details["cycle"]] == ["a3", "a1", "a2"]
    assert Alert.objects.filter(kind="deadlock").count() == 1


def test_a_chain_without_a_cycle_is_fine(ring):
    take("a1", "p2", wait_seconds=60)
    take("a2", "p3", wait_seconds=60)
    assert Assignment.objects.queued().count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_closing_a_cycle_at_the_same_moment_one_is_refused(run_in_threads):
    pool = make_pool("ring-race")
    for i in (1, 2):
        make_agent(pool, f"a{i}", capacity=3)
        make_profile(f"p{i}", pool="ring-race")
        take(f"a{i}", f"p{i}")
    results = run_in_threads(2, lambda i: take(f"a{i + 1}", f"p{2 - i}", wait_seconds=60))
    assert sum(isinstance(r, Assignment) for r in results) == 1, results
    assert sum(isinstance(r, Deadlock) for r in results) == 1, results


def test_the_sweep_breaks_a_cycle_formed_by_a_hand_over_by_expiring_the_youngest_wait(ring):
    held = Assignment.objects.get(agent__agent_id="a1", status=S.ACTIVE)
    take("a2", "p1", wait_seconds=60)  # a2 → a1
    a3_for_p1 = take("a3", "p1", wait_seconds=60)  # a3 → a1, behind a2
    youngest = take("a2", "p3", wait_seconds=60)  # a2 → a3: no cycle yet (a3 waits for a1)
    assert wait_cycles_break(actor=OPERATOR) == {"cycles_broken": 0}
    # a1 lets p1 go: a2 gets it, and now a3 waits for a2 while a2 waits for a3.
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("a1"))
    assert Assignment.objects.get(profile__profile_id="p1", status=S.ACTIVE).agent.agent_id == "a2"
    assert wait_cycles_break(actor=OPERATOR) == {"cycles_broken": 1}
    expired = Assignment.objects.get(pk=youngest.pk)
    assert expired.status == S.EXPIRED
    assert Event.objects.get(type="assignment.expired", assignment_id=youngest.assignment_id).data["reason"] == "deadlock"
    assert Assignment.objects.get(pk=a3_for_p1.pk).status == S.PENDING
    assert Alert.objects.filter(kind="deadlock", status="open").count() == 1
    assert wait_cycles_break(actor=OPERATOR) == {"cycles_broken": 0}
