"""factory_boy factories: one object each, relations passed explicitly. They write rows directly,
for setting the scene; behaviour under test goes through the services."""

import factory
from django.utils import timezone

from agents.models import Agent
from assignments.models import Assignment, Profile
from config.tokens import token_hash
from pools.models import AgentPool


class PoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AgentPool

    name = factory.Sequence(lambda n: f"pool-{n}")
    platform = AgentPool.Platform.KUBERNETES
    enrollment_token_hash = factory.LazyAttribute(lambda o: token_hash(f"enr_{o.name}"))


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    agent_id = factory.Sequence(lambda n: f"agent-{n}")
    status = Agent.Status.ACTIVE
    capacity = 4
    last_heartbeat = factory.LazyFunction(timezone.now)
    token_hash = factory.LazyAttribute(lambda o: token_hash(f"agt_{o.agent_id}"))


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    profile_id = factory.Sequence(lambda n: f"profile-{n}")
    name = factory.LazyAttribute(lambda o: f"Profile {o.profile_id}")


class AssignmentFactory(factory.django.DjangoModelFactory):
    """Only for history rows (ended assignments); live ones are made with `assignment_create`."""

    class Meta:
        model = Assignment

    status = Assignment.Status.RELEASED
    fencing_token = 1
    released_at = factory.LazyFunction(timezone.now)
