from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent
from assignments.actors import Actor
from assignments.models import Assignment
from assignments.services import assignment_create
from tests.factories import AgentFactory, PoolFactory, ProfileFactory


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def job_actor():
    return Actor.system("job-under-test")


@pytest.fixture
def fleet(db):
    """One pool (short timeouts) with two agents and three profiles; nothing held yet."""

    class Fleet:
        def __init__(self):
            self.pool = PoolFactory(heartbeat_timeout_seconds=5, assignment_idle_timeout_seconds=60)
            self.a = AgentFactory(pool=self.pool, agent_id="agent-a", capacity=4)
            self.b = AgentFactory(pool=self.pool, agent_id="agent-b", capacity=4)
            self.profiles = [ProfileFactory(profile_id=f"prof-{i}", pool=self.pool) for i in range(3)]

        def take(self, profile, agent) -> Assignment:
            return assignment_create(profile_id=profile.profile_id, agent_id=agent.agent_id,
                                     actor=Actor.for_agent(agent.agent_id))

    return Fleet()


def set_scene(model, pk, **fields):
    """Move a row's clock back for the scene (tests only; behaviour goes through services)."""
    model.objects.filter(pk=pk).update(**fields)


def refresh(obj):
    obj.refresh_from_db()
    return obj


__all__ = ["ago", "set_scene", "refresh", "Agent", "Assignment"]
