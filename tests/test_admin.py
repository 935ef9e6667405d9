import pytest
from django.urls import reverse

from agents.models import Agent
from assignments.models import Assignment, Event, Profile
from assignments.services import assignment_create
from pools.models import AgentPool
from tests.helpers import as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene():
    pool = make_pool("k8s")
    make_agent(pool, "a1", capacity=2)
    make_agent(pool, "a2", capacity=2)
    make_profile("p1")
    return assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))


@pytest.mark.parametrize("model", ["pools/agentpool", "agents/agent", "assignments/profile", "assignments/assignment",
                                   "assignments/event"])
def test_every_changelist_renders_with_a_fixed_number_of_queries(admin_client, scene, model, django_assert_max_num_queries):
    with django_assert_max_num_queries(12):
        response = admin_client.get(f"/admin/{model}/")
    assert response.status_code == 200


def test_force_release_action_goes_through_the_service(admin_client, scene):
    response = admin_client.post(reverse("admin:assignments_assignment_changelist"),
                                 {"action": "force_release", "_selected_action": [scene.pk]}, follow=True)
    assert response.status_code == 200
    scene.refresh_from_db()
    # a1 is alive, so an operator's release asks it to let go first.
    assert scene.status == Assignment.Status.RELEASING
    event = Event.objects.filter(assignment_id=scene.assignment_id).latest("seq")
    assert event.actor == "user:admin" and event.to_status == "releasing"


def test_drain_action_moves_assignments_and_leaves_events(admin_client, scene):
    agent = Agent.objects.get(agent_id="a1")
    admin_client.post(reverse("admin:agents_agent_changelist"), {"action": "drain", "_selected_action": [agent.pk]})
    scene.refresh_from_db()
    assert scene.agent.agent_id == "a2"
    assert Event.objects.filter(type="agent.drained", agent_id="a1", actor="user:admin").exists()


def test_mark_stale_action_fails_over(admin_client, scene):
    agent = Agent.objects.get(agent_id="a1")
    admin_client.post(reverse("admin:agents_agent_changelist"), {"action": "mark_stale", "_selected_action": [agent.pk]})
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.STALE
    scene.refresh_from_db()
    assert scene.agent.agent_id == "a2"


def test_event_log_is_read_only_in_the_admin(admin_client, scene):
    event = Event.objects.first()
    assert admin_client.get(reverse("admin:assignments_event_add")).status_code == 403
    assert admin_client.post(reverse("admin:assignments_event_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    admin_client.post(reverse("admin:assignments_event_change", args=[event.pk]), {"type": "tampered"})
    assert Event.objects.get(pk=event.pk).type == event.type
    response = admin_client.post(reverse("admin:assignments_event_changelist"),
                                 {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    assert Event.objects.filter(pk=event.pk).exists()
    assert response.status_code in (200, 302)


def test_creating_a_pool_in_the_admin_shows_its_token_once_and_records_an_event(admin_client):
    response = admin_client.post(reverse("admin:pools_agentpool_add"), {
        "name": "new-pool", "platform": "docker", "region": "eu", "strategy": "least_connections",
        "heartbeat_timeout_seconds": 30, "assignment_idle_timeout_seconds": 600, "min_health_score": 0.5,
    }, follow=True)
    assert response.status_code == 200
    assert "Enrollment token for new-pool" in response.content.decode()
    assert AgentPool.objects.filter(name="new-pool").exists()
    assert Event.objects.filter(type="pool.created", pool="new-pool", actor="user:admin").exists()


def test_editing_a_profile_in_the_admin_goes_through_the_service(admin_client, scene):
    profile = Profile.objects.get(profile_id="p1")
    response = admin_client.post(reverse("admin:assignments_profile_change", args=[profile.pk]), {
        "name": "Renamed", "pool": "", "tags": '["x"]', "region": "eu", "metadata": "{}", "enabled": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    profile.refresh_from_db()
    assert profile.name == "Renamed" and profile.enabled is False
    event = Event.objects.filter(type="profile.updated", profile_id="p1").latest("seq")
    assert set(event.data["fields"]) == {"name", "tags", "region", "enabled"}


def test_editing_an_agent_in_the_admin_goes_through_the_service(admin_client, scene):
    agent = Agent.objects.get(agent_id="a2")
    response = admin_client.post(reverse("admin:agents_agent_change", args=[agent.pk]), {
        "agent_type": "worker", "capabilities": "[]", "services": "[]", "endpoints": "{}", "tags": "[]",
        "metadata": "{}", "version": "2.0", "region": "", "capacity": 7, "weight": 1.0, "priority": 0,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    agent.refresh_from_db()
    assert agent.capacity == 7 and agent.version == "2.0"
    assert Event.objects.filter(type="agent.updated", agent_id="a2", actor="user:admin").exists()


def test_assignment_change_form_cannot_rewrite_the_row(admin_client, scene):
    url = reverse("admin:assignments_assignment_change", args=[scene.pk])
    assert admin_client.get(url).status_code == 200  # viewable
    response = admin_client.post(url, {"status": "failed", "workflow_id": "tampered"})
    assert response.status_code == 403
    scene.refresh_from_db()
    assert scene.status == Assignment.Status.ACTIVE and scene.workflow_id == ""


@pytest.mark.parametrize("bad", [{"metadata": "[1, 2]"}, {"tags": '"abc"'}, {"tags": "[1]"}])
def test_a_value_the_service_refuses_is_a_form_error_not_a_500(admin_client, bad):
    from django.db.models import Max

    before = Event.objects.aggregate(m=Max("seq"))["m"]
    data = {"profile_id": "new-p", "name": "", "pool": "", "tags": "[]", "region": "", "metadata": "{}", "enabled": "on"}
    data.update(bad)
    response = admin_client.post(reverse("admin:assignments_profile_add"), data)
    assert response.status_code == 200  # the form again, with the error
    assert response.context["adminform"].form.errors
    assert not Profile.objects.filter(profile_id="new-p").exists()
    assert Event.objects.aggregate(m=Max("seq"))["m"] == before


def test_an_agent_field_the_service_refuses_is_a_form_error_and_nothing_changes(admin_client, scene):
    agent = Agent.objects.get(agent_id="a2")
    response = admin_client.post(reverse("admin:agents_agent_change", args=[agent.pk]), {
        "agent_type": "worker", "capabilities": '"not-a-list"', "services": "[]", "endpoints": "{}", "tags": "[]",
        "metadata": "{}", "version": "", "region": "", "capacity": 3, "weight": 1.0, "priority": 0,
    })
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert Agent.objects.get(agent_id="a2").capacity == 2
