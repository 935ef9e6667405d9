import pytest

from agents.models import Agent
from agents.services import (
    agent_deregister,
    agent_drain,
    agent_heartbeat,
    agent_mark_stale,
    agent_register,
    agent_set_status,
)
from assignments.models import Assignment, Event
from assignments.services import assignment_create, assignment_release
from config import errors
from config.auth import principal_for_token
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def test_register_is_idempotent_by_agent_id_and_rotates_the_token():
    pool = make_pool()
    first, token1 = agent_register(pool=pool, agent_id="a1", actor=OPERATOR, capacity=2, tags=["eu"])
    second, token2 = agent_register(pool=pool, agent_id="a1", actor=OPERATOR, capacity=5)
    assert first.pk == second.pk and Agent.objects.count() == 1
    assert second.capacity == 5 and second.tags == ["eu"]
    assert token1 != token2
    assert principal_for_token(token1) is None
    assert principal_for_token(token2).agent.agent_id == "a1"
    events = list(Event.objects.filter(type="agent.registered").order_by("seq").values_list("data", flat=True))
    assert [e["reregistered"] for e in events] == [False, True]


def test_register_refuses_bad_fields_and_writes_nothing():
    pool = make_pool()
    for bad in ({"capacity": 0}, {"capacity": "many"}, {"tags": "eu"}, {"agent_type": "wizard"},
                {"weight": float("nan")}, {"load_metrics": {"cpu": 1e9}}, {"unknown": 1}):
        with pytest.raises(errors.ValidationFailed):
            agent_register(pool=pool, agent_id="a1", actor=OPERATOR, **bad)
    with pytest.raises(errors.ValidationFailed):
        agent_register(pool=pool, agent_id="bad/id", actor=OPERATOR)
    assert not Agent.objects.exists()
    assert not Event.objects.filter(type="agent.registered").exists()


def test_moving_pools_is_refused_while_holding_live_assignments():
    a, b = make_pool("a"), make_pool("b")
    make_agent(a, "mover")
    make_profile("p1")
    assignment_create(profile_id="p1", agent_id="mover", actor=as_agent("mover"))
    with pytest.raises(errors.Conflict):
        agent_register(pool=b, agent_id="mover", actor=OPERATOR)
    assert Agent.objects.get(agent_id="mover").pool == a


def test_heartbeat_updates_health_and_renews_reported_assignments():
    pool = make_pool()
    make_agent(pool, "a1", capacity=3)
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    Assignment.objects.filter(pk=held.pk).update(last_activity=held.last_activity.replace(year=2020))

    result = agent_heartbeat(agent_id="a1", actor=as_agent("a1"), load_metrics={"cpu": 95, "memory": 40},
                             reported=[held.assignment_id])

    assert result.revoked == [] and result.assigned == []
    assert 0 < result.agent.health_score < 1
    held.refresh_from_db()
    assert held.last_activity.year > 2020


def test_heartbeat_tells_the_agent_what_to_drop_and_what_to_pick_up():
    pool = make_pool()
    make_agent(pool, "a1", capacity=3)
    make_agent(pool, "a2", capacity=3)
    for p in ("p1", "p2", "p3"):
        make_profile(p)
    mine = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    lost = assignment_create(profile_id="p2", agent_id="a2", actor=as_agent("a2"))
    gone = assignment_create(profile_id="p3", agent_id="a1", actor=as_agent("a1"))
    assignment_release(assignment_id=gone.assignment_id, actor=as_agent("a1"))
    agent_mark_stale(agent_id="a2", actor=OPERATOR)  # p2 fails over to a1
    lost.refresh_from_db()
    assert lost.agent.agent_id == "a1"

    # a2 comes back and still believes it holds p2.
    back = agent_heartbeat(agent_id="a2", actor=as_agent("a2"), reported=[lost.assignment_id])
    assert back.agent.status == Agent.Status.ACTIVE
    assert back.revoked == [lost.assignment_id]

    # a1 reports only p1 and the one it released: it must drop p3 and pick up p2.
    reply = agent_heartbeat(agent_id="a1", actor=as_agent("a1"), reported=[mine.assignment_id, gone.assignment_id])
    assert reply.revoked == [gone.assignment_id]
    assert reply.assigned == [lost.assignment_id]


def test_a_releasing_assignment_the_agent_no_longer_reports_is_released():
    from django.contrib.auth.models import User

    from config.actors import Actor

    pool = make_pool()
    make_agent(pool, "a1")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    assignment_release(assignment_id=held.assignment_id, actor=Actor.for_user(User.objects.create_user("op", is_staff=True)))

    told = agent_heartbeat(agent_id="a1", actor=as_agent("a1"), reported=[held.assignment_id])
    assert told.revoked == [held.assignment_id]
    held.refresh_from_db()
    assert held.status == Assignment.Status.RELEASING

    agent_heartbeat(agent_id="a1", actor=as_agent("a1"), reported=[])
    held.refresh_from_db()
    assert held.status == Assignment.Status.RELEASED


def test_agents_act_only_as_themselves():
    pool = make_pool()
    make_agent(pool, "a1")
    make_agent(pool, "a2")
    for call in (
        lambda: agent_heartbeat(agent_id="a2", actor=as_agent("a1")),
        lambda: agent_set_status(agent_id="a2", status="busy", actor=as_agent("a1")),
        lambda: agent_deregister(agent_id="a2", actor=as_agent("a1")),
        lambda: agent_drain(agent_id="a2", actor=as_agent("a2")),
        lambda: agent_mark_stale(agent_id="a2", actor=as_agent("a2")),
    ):
        with pytest.raises(errors.Forbidden):
            call()
    assert Agent.objects.get(agent_id="a2").status == Agent.Status.ACTIVE


def test_set_status_only_accepts_active_or_busy_and_refuses_impossible_moves():
    pool = make_pool()
    make_agent(pool, "a1")
    with pytest.raises(errors.ValidationFailed):
        agent_set_status(agent_id="a1", status="inactive", actor=as_agent("a1"))
    agent_drain(agent_id="a1", actor=OPERATOR)
    with pytest.raises(errors.InvalidTransition):
        agent_set_status(agent_id="a1", status="active", actor=as_agent("a1"))


def test_deregistered_agents_token_stops_working_and_deregistering_twice_is_fine():
    pool = make_pool()
    agent, token = agent_register(pool=pool, agent_id="a1", actor=OPERATOR)
    agent_deregister(agent_id="a1", actor=as_agent("a1"))
    agent_deregister(agent_id="a1", actor=OPERATOR)
    assert principal_for_token(token) is None
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.INACTIVE
    assert Event.objects.filter(type="agent.deregistered").count() == 1


def test_mark_stale_drops_health_and_is_idempotent():
    pool = make_pool()
    make_agent(pool, "a1")
    agent_mark_stale(agent_id="a1", actor=OPERATOR)
    agent_mark_stale(agent_id="a1", actor=OPERATOR)
    agent = Agent.objects.get(agent_id="a1")
    assert agent.status == Agent.Status.STALE and agent.health_score == 0.0
    assert Event.objects.filter(type="agent.stale").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_agents_of_one_pool_lost_at_once_do_not_deadlock(run_in_threads):
    pool = make_pool()
    for i in range(6):
        make_agent(pool, f"a{i}", capacity=4)
    for i in range(6):
        make_profile(f"p{i}")
        assignment_create(profile_id=f"p{i}", agent_id=f"a{i}", actor=as_agent(f"a{i}"))

    results = run_in_threads(4, lambda i: agent_mark_stale(agent_id=f"a{i}", actor=OPERATOR))

    assert all(isinstance(r, Agent) for r in results), results
    live = Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES).select_related("agent")
    assert live.count() == 6
    assert {a.agent.agent_id for a in live if a.agent} <= {"a4", "a5"}


def test_registering_a_stale_agent_again_resolves_its_stale_alert():
    from assignments.models import Alert

    pool = make_pool()
    make_agent(pool, "a1")
    agent_mark_stale(agent_id="a1", actor=OPERATOR)
    assert Alert.objects.filter(kind="agent_stale", agent_id="a1", status="open").exists()

    agent_register(pool=pool, agent_id="a1", actor=OPERATOR)

    assert not Alert.objects.filter(kind="agent_stale", agent_id="a1", status__in=["open", "acknowledged"]).exists()


def test_registering_a_live_agent_again_fences_off_its_old_incarnation():
    """Whoever re-registers an agent id (a restarted process, or anyone with the pool's enrollment
    token) gets a new token; the old incarnation's token and fencing tokens stop working, and its
    live assignments move inside the pool instead of staying with two processes driving them."""
    pool = make_pool()
    _, old_token = agent_register(pool=pool, agent_id="a1", actor=OPERATOR)
    make_agent(pool, "a2")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))

    agent_register(pool=pool, agent_id="a1", actor=as_agent("a1"))

    assert principal_for_token(old_token) is None
    held.refresh_from_db()
    assert held.fencing_token > 1
    assert held.agent.agent_id == "a2"  # the pool's strategy moved it away from the re-keyed agent
    with pytest.raises(errors.StaleFencingToken):
        assignment_release(assignment_id=held.assignment_id, actor=as_agent("a1"), fencing_token=1)
    assert Event.objects.filter(type="assignment.reassigned", assignment_id=held.assignment_id).exists()
