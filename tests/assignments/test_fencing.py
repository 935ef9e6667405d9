import pytest

from agents.services import agent_deregister, agent_mark_stale
from assignments.models import Assignment, Profile
from assignments.services import assignment_create, assignment_release, assignment_update
from config.errors import StaleFencingToken
from pools.services import pool_rebalance
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def test_fencing_token_grows_on_every_assignment_and_reassignment():
    pool = make_pool()
    for agent_id in ("a1", "a2"):
        make_agent(pool, agent_id, capacity=2)
    make_profile("p1")
    seen = []

    first = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    seen.append(first.fencing_token)
    assignment_release(assignment_id=first.assignment_id, actor=as_agent("a1"))

    second = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    seen.append(second.fencing_token)

    agent_mark_stale(agent_id="a1", actor=OPERATOR)  # failover to a2
    second.refresh_from_db()
    assert second.agent.agent_id == "a2"
    seen.append(second.fencing_token)

    agent_deregister(agent_id="a2", actor=OPERATOR)  # nobody left: waits, still fenced
    second.refresh_from_db()
    assert second.status == Assignment.Status.PENDING and second.agent is None
    seen.append(second.fencing_token)

    make_agent(pool, "a3")  # registration rebalances: a3 picks it up
    second.refresh_from_db()
    assert second.agent.agent_id == "a3"
    seen.append(second.fencing_token)

    assert seen == sorted(set(seen)), f"tokens must strictly grow: {seen}"
    assert Profile.objects.get(profile_id="p1").fencing_token == seen[-1]


def test_stale_token_is_refused_after_reassignment():
    pool = make_pool()
    make_agent(pool, "a1")
    make_agent(pool, "a2")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    old_token = held.fencing_token
    agent_mark_stale(agent_id="a1", actor=OPERATOR)
    held.refresh_from_db()
    assert held.agent.agent_id == "a2" and held.fencing_token > old_token

    # The old holder wakes up and acts with its old token: refused, and nothing changes.
    with pytest.raises(StaleFencingToken) as exc:
        assignment_update(assignment_id=held.assignment_id, actor=as_agent("a1"), status="idle", fencing_token=old_token)
    assert exc.value.details["current_fencing_token"] == held.fencing_token
    with pytest.raises(StaleFencingToken):
        assignment_release(assignment_id=held.assignment_id, actor=as_agent("a1"), fencing_token=old_token)
    held.refresh_from_db()
    assert held.status == Assignment.Status.ACTIVE and held.agent.agent_id == "a2"

    # The new holder's current token works.
    assignment_update(assignment_id=held.assignment_id, actor=as_agent("a2"), status="idle", fencing_token=held.fencing_token)
    held.refresh_from_db()
    assert held.status == Assignment.Status.IDLE


def test_rebalance_of_a_waiting_assignment_issues_a_new_token():
    pool = make_pool()
    make_agent(pool, "a1")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    agent_deregister(agent_id="a1", actor=OPERATOR)
    held.refresh_from_db()
    waiting_token = held.fencing_token
    make_agent(pool, "a2")
    pool_rebalance(pool=pool, actor=OPERATOR)
    held.refresh_from_db()
    assert held.agent.agent_id == "a2" and held.fencing_token > waiting_token


def test_a_refused_take_leaves_the_profiles_token_and_daily_count_as_they_were():
    """The take's check and its fencing-token bump are one statement: every refusal after it (the
    holder, a guardrail, the agent's capacity) rolls the bump back with the take — and the holder's
    refusal still comes first."""
    from config.errors import AgentAtCapacity, ProfileQuarantined, ProfileTaken

    def quarantine(profile_id):  # as a `banned` report leaves it (the scene, not the change under test)
        Profile.objects.filter(profile_id=profile_id).update(quarantined=True, quarantine_reason="banned")

    pool = make_pool()
    make_agent(pool, "full", capacity=1)
    make_agent(pool, "other", capacity=3)
    for profile_id in ("f1", "f2", "f3"):
        make_profile(profile_id)
    assignment_create(profile_id="f1", agent_id="full", actor=as_agent("full"))

    def state(profile_id):
        return Profile.objects.values_list("fencing_token", "quota_takes").get(profile_id=profile_id)

    before = state("f2")
    with pytest.raises(AgentAtCapacity):
        assignment_create(profile_id="f2", agent_id="full", actor=as_agent("full"))
    assert state("f2") == before
    held = state("f1")
    with pytest.raises(ProfileTaken):
        assignment_create(profile_id="f1", agent_id="other", actor=as_agent("other"))
    assert state("f1") == held
    quarantine("f1")
    with pytest.raises(ProfileTaken):  # held and quarantined: the holder is named first
        assignment_create(profile_id="f1", agent_id="other", actor=as_agent("other"))
    quarantine("f3")
    before = state("f3")
    with pytest.raises(ProfileQuarantined):
        assignment_create(profile_id="f3", agent_id="other", actor=as_agent("other"))
    assert state("f3") == before
    taken = assignment_create(profile_id="f2", agent_id="other", actor=as_agent("other"))
    assert taken.fencing_token == 1 and state("f2") == (1, 1)  # the first take that stood counts
