"""Round robin that is round robin (issue 10, item 13), through the failover service."""

from collections import Counter

import pytest

from agents.models import Agent
from agents.services import agent_drain
from assignments.models import Assignment
from assignments.services import assignment_create
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def test_a_drained_agents_work_goes_round_the_other_agents_evenly():
    pool = make_pool("rr", strategy="round_robin")
    make_agent(pool, "leaving", capacity=12)
    for i in range(12):
        make_profile(f"p{i}")
        assignment_create(profile_id=f"p{i}", agent_id="leaving", actor=as_agent("leaving"))
    for name in ("x", "y", "z"):
        make_agent(pool, name, capacity=12)

    agent_drain(agent_id="leaving", actor=OPERATOR)

    held = Counter(Assignment.objects.filter(status=Assignment.Status.ACTIVE).values_list("agent__agent_id", flat=True))
    assert held == {"x": 4, "y": 4, "z": 4}
    stamps = dict(Agent.objects.filter(agent_id__in=["x", "y", "z"]).values_list("agent_id", "last_assigned_at"))
    assert len(set(stamps.values())) == 3  # each agent's own turn, so the next pass goes on around
