"""Operator actions: confirmation step, CSRF, permissions, and that they go through the services
(the event names the operator)."""

import pytest
from django.test import Client

from agents.models import Agent
from assignments.models import Assignment, Event

pytestmark = pytest.mark.django_db


def _actions(scene):
    a = scene["assignments"][0]
    alert = _alert()
    return {
        "release": f"/assignments/{a.assignment_id}/release/",
        "drain": "/agents/agent-0-0/drain/",
        "stale": "/agents/agent-0-0/mark-stale/",
        "acknowledge": f"/alerts/{alert.alert_id}/acknowledge/",
    }


def _alert():
    from assignments.alerts import alert_raise
    from assignments.models import Alert
    from tests.dashboard.conftest import OPERATOR

    alert, _ = alert_raise(kind=Alert.Kind.CONFLICT_BURST, actor=OPERATOR, message="prof-0-0 refused 5 times",
                           dedup_key="conflict_burst:prof-0-0", profile_id="prof-0-0")
    return alert


ACTIONS = ["release", "drain", "stale", "acknowledge"]


@pytest.mark.parametrize("name", ACTIONS)
def test_anonymous_visitor_is_sent_to_login_for_actions(client, scene, name):
    url = _actions(scene)[name]
    for response in (client.get(url), client.post(url)):
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Event.objects.filter(actor__startswith="user:").exists()


@pytest.mark.parametrize("name", ACTIONS)
def test_viewer_cannot_act(viewer_client, scene, name):
    url = _actions(scene)[name]
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url).status_code == 403
    assert not Event.objects.filter(actor="user:viewer").exists()
    assert Assignment.objects.get(pk=scene["assignments"][0].pk).status == "active"
    assert Agent.objects.get(agent_id="agent-0-0").status == "active"
    assert _alert().status == "open"


@pytest.mark.parametrize("name", ACTIONS)
def test_operator_gets_a_confirmation_page_and_nothing_changes_yet(operator_client, scene, name):
    url = _actions(scene)[name]
    before = Event.objects.count()
    response = operator_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'method="post"' in html and "csrfmiddlewaretoken" in html
    assert Event.objects.count() == before


@pytest.mark.parametrize("name", ACTIONS)
def test_action_without_csrf_token_is_refused(operator, scene, name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(_actions(scene)[name]).status_code == 403
    assert not Event.objects.filter(actor="user:oper").exists()


def test_operator_force_releases_a_held_assignment_to_releasing(operator_client, scene):
    a = scene["assignments"][0]
    response = operator_client.post(f"/assignments/{a.assignment_id}/release/", {"next": "/assignments/?pool=pool-0"})
    assert response.status_code == 302 and response["Location"] == "/assignments/?pool=pool-0"
    a.refresh_from_db()
    # The agent is alive: it is told to let go (DESIGN: releasing, then released when it confirms).
    assert a.status == "releasing"
    event = Event.objects.filter(assignment_id=a.assignment_id).order_by("-seq").first()
    assert (event.type, event.actor, event.to_status) == ("assignment.status_changed", "user:oper", "releasing")


def test_force_release_of_a_waiting_assignment_releases_it(operator_client, scene):
    from agents.services import agent_drain
    from tests.dashboard.conftest import OPERATOR

    for agent in scene["agents"]:
        agent_drain(agent_id=agent.agent_id, actor=OPERATOR)
    a = Assignment.objects.get(pk=scene["assignments"][0].pk)
    assert a.status == "pending" and a.agent_id is None
    operator_client.post(f"/assignments/{a.assignment_id}/release/")
    a.refresh_from_db()
    assert a.status == "released" and a.release_reason == "cancelled"


def test_release_refuses_an_offsite_next_url(operator_client, scene):
    a = scene["assignments"][0]
    response = operator_client.post(f"/assignments/{a.assignment_id}/release/", {"next": "https://evil.example/"})
    assert response["Location"] == "/assignments/"


def test_operator_drains_an_agent_and_its_work_moves(operator_client, scene):
    response = operator_client.post("/agents/agent-0-0/drain/")
    assert response.status_code == 302
    assert Agent.objects.get(agent_id="agent-0-0").status == "inactive"
    moved = Assignment.objects.get(pk=scene["assignments"][0].pk)
    assert moved.agent.agent_id == "agent-0-1" and moved.status == "active"
    assert Event.objects.filter(type="agent.drained", actor="user:oper", agent_id="agent-0-0").exists()


def test_operator_marks_an_agent_stale(operator_client, scene):
    operator_client.post("/agents/agent-0-0/mark-stale/")
    assert Agent.objects.get(agent_id="agent-0-0").status == "stale"
    event = Event.objects.get(type="agent.stale")
    assert event.actor == "user:oper" and "oper" in event.data["reason"]


def test_staff_user_is_an_operator(client, scene, django_user_model):
    staff = django_user_model.objects.create_user("boss", password="x-long-pass-1", is_staff=True)
    client.force_login(staff)
    assert client.post("/agents/agent-0-1/mark-stale/").status_code == 302
    assert Agent.objects.get(agent_id="agent-0-1").status == "stale"


def test_marking_an_inactive_agent_stale_changes_nothing(operator_client, scene):
    from agents.services import agent_drain
    from tests.dashboard.conftest import OPERATOR

    agent_drain(agent_id="agent-0-0", actor=OPERATOR)
    # The service leaves inactive agents as they are (not an error): nothing changes.
    response = operator_client.post("/agents/agent-0-0/mark-stale/")
    assert response.status_code == 302
    assert Agent.objects.get(agent_id="agent-0-0").status == "inactive"


def test_unknown_targets_are_404(operator_client, scene):
    assert operator_client.get("/assignments/00000000-0000-0000-0000-000000000000/release/").status_code == 404
    assert operator_client.post("/agents/nobody/drain/").status_code == 404
    assert operator_client.get("/assignments/not-a-uuid/release/").status_code == 404


def test_actions_refuse_other_methods(operator_client, scene):
    assert operator_client.put(_actions(scene)["drain"]).status_code == 405


def test_a_refusal_from_the_service_is_shown_with_its_status_and_changes_nothing(operator_client, scene, monkeypatch):
    from config.errors import InvalidTransition
    from dashboard import actions

    def refuse(**kwargs):
        raise InvalidTransition("agent 'agent-0-0' cannot go from active to draining", details={})

    monkeypatch.setattr(actions, "agent_drain", refuse)
    response = operator_client.post("/agents/agent-0-0/drain/")
    assert response.status_code == 409
    html = response.content.decode()
    assert "cannot go from active to draining" in html and "invalid_transition" in html
    assert Agent.objects.get(agent_id="agent-0-0").status == "active"


def test_operator_acknowledges_an_alert(operator_client, scene):
    alert = _alert()
    html = operator_client.get("/").content.decode()
    assert f"/alerts/{alert.alert_id}/acknowledge/" in html
    response = operator_client.post(f"/alerts/{alert.alert_id}/acknowledge/", {"next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    alert.refresh_from_db()
    assert alert.status == "acknowledged" and alert.acknowledged_by == "user:oper"
    assert Event.objects.filter(type="alert.acknowledged", actor="user:oper").exists()
    html = operator_client.get("/").content.decode()
    assert f"/alerts/{alert.alert_id}/acknowledge/" not in html and "acknowledged" in html


def test_viewer_sees_alerts_without_acknowledge_button(viewer_client, scene):
    alert = _alert()
    html = viewer_client.get("/").content.decode()
    assert "prof-0-0 refused 5 times" in html
    assert f"/alerts/{alert.alert_id}/acknowledge/" not in html
