"""Scene-setting through the services, so every object a test starts from has its events."""

from agents.services import agent_register
from assignments.services import profile_create
from config.actors import Actor
from pools.services import pool_create

OPERATOR = Actor.system("test-operator")


def make_pool(name="pool-a", **fields):
    pool, _token = pool_create(name=name, actor=OPERATOR, **fields)
    return pool


def make_agent(pool, agent_id, **fields):
    agent, _token = agent_register(pool=pool, agent_id=agent_id, actor=OPERATOR, **fields)
    return agent


def make_profile(profile_id, **fields):
    return profile_create(profile_id=profile_id, actor=OPERATOR, **fields)


def as_agent(agent_id: str) -> Actor:
    return Actor.for_agent(agent_id)

