"""Finding a session by its pod or container, and forgetting a dead holder's pod (issue 10, item 16)."""

import pytest

from agents.services import agent_mark_stale
from assignments.models import Assignment
from tests.api.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def test_assignments_can_be_filtered_by_platform_resource_id(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    pod = api.post("/api/assignments", {"profile_id": "p1", "platform_resource_id": "pod-7"}, token=token).json()
    api.post("/api/assignments", {"profile_id": "p2", "platform_resource_id": "pod-8"}, token=token)

    found = api.get("/api/assignments?platform_resource_id=pod-7", token=token).json()["results"]
    assert [a["assignment_id"] for a in found] == [pod["assignment_id"]]
    assert api.get("/api/assignments?platform_resource_id=pod-9", token=token).json()["results"] == []


def test_failover_clears_the_dead_agents_pod_name(api, make_agent, make_profile):
    _, token = make_agent("dead")
    make_agent("alive")
    make_profile("p1")
    taken = api.post("/api/assignments", {"profile_id": "p1", "platform_resource_id": "pod-dead-1"}, token=token).json()

    agent_mark_stale(agent_id="dead", actor=SYSTEM)

    moved = Assignment.objects.select_related("agent").get(assignment_id=taken["assignment_id"])
    assert moved.agent.agent_id == "alive"
    assert moved.platform_resource_id == ""
