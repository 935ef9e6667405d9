import pytest
from django.contrib.auth.models import Group, User

from agents.services import agent_register
from assignments.services import assignment_create, profile_create
from config.actors import OPERATORS_GROUP, Actor
from pools.services import pool_create

OPERATOR = Actor.system("test-setup")


@pytest.fixture
def viewer(db):
    return User.objects.create_user("viewer", password="viewer-pass-123")


@pytest.fixture
def operator(db):
    user = User.objects.create_user("oper", password="oper-pass-123")
    user.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
    return user


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def make_scene(*, pools=1, agents=2, profiles=4, held=2, prefix=""):
    """Pools, agents, profiles and live assignments, all made through the services."""
    made = {"pools": [], "agents": [], "profiles": [], "assignments": []}
    for p in range(pools):
        pool, _ = pool_create(name=f"{prefix}pool-{p}", actor=OPERATOR)
        made["pools"].append(pool)
        for a in range(agents):
            agent, _ = agent_register(pool=pool, agent_id=f"{prefix}agent-{p}-{a}", actor=OPERATOR, capacity=10,
                                      load_metrics={"cpu": 20 + a, "memory": 40})
            made["agents"].append(agent)
        for i in range(profiles):
            profile = profile_create(profile_id=f"{prefix}prof-{p}-{i}", actor=OPERATOR, name=f"Profile {i}")
            made["profiles"].append(profile)
            if i < held:
                made["assignments"].append(assignment_create(
                    profile_id=profile.profile_id, agent_id=f"{prefix}agent-{p}-{i % agents}", actor=OPERATOR,
                    workflow_id=f"wf-{i}"))
    return made


@pytest.fixture
def scene(db):
    return make_scene()
