"""Scene-setting through the services, so every object a test starts from has its events."""

from agents.services import agent_register
from assignments.actors import Actor
from assignments.services import profile_create
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


def free_port() -> int:
    """A TCP port nobody listens on now: fixed ports collide when two suites share a machine."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
