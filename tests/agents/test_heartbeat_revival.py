"""A revived agent's heartbeat reply is built after the rebalance it sets off (issue 10, item 14)."""

import pytest

from agents.services import agent_heartbeat, agent_mark_stale
from assignments.models import Assignment
from assignments.services import assignment_create
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def test_a_revived_agent_is_not_told_to_drop_what_the_rebalance_gives_straight_back():
    pool = make_pool("solo")
    make_agent(pool, "a1", capacity=2)
    make_profile("p1")
    taken = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    agent_mark_stale(agent_id="a1", actor=OPERATOR)  # nobody else: the assignment waits
    assert Assignment.objects.get(pk=taken.pk).agent_id is None

    reply = agent_heartbeat(agent_id="a1", actor=as_agent("a1"), reported=[taken.assignment_id])

    back = Assignment.objects.get(pk=taken.pk)
    assert back.agent_id == reply.agent.pk and back.status == Assignment.Status.ACTIVE
    assert back.fencing_token > taken.fencing_token
    assert reply.revoked == []
    assert reply.assigned == [taken.assignment_id]  # keep it, with its new fencing token
