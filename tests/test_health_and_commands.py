import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from agents.models import Agent
from assignments.models import Assignment, Event

pytestmark = pytest.mark.django_db


def test_health_reports_every_dependency(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"database", "cache", "channel_layer"}
    assert all(check["ok"] for check in body["checks"].values())


def test_health_is_503_when_the_database_is_down(admin_client, monkeypatch):
    client = admin_client  # the error text is for operators (issue 10, item 9)
    from dashboard import views

    def broken():
        raise RuntimeError("connection refused")

    monkeypatch.setattr(views, "_database", broken)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"ok": False, "error": "RuntimeError: connection refused"}


def test_demo_data_loads_through_the_services_once(capsys):
    call_command("load_demo")
    assert Agent.objects.count() == 5
    assert Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES).count() == 5
    # The demo's failover happened, with its events.
    assert Event.objects.filter(type="agent.stale", agent_id="skyvern-k8s-3").exists()
    assert Event.objects.filter(type="assignment.reassigned").exists()
    events = Event.objects.count()
    call_command("load_demo")
    assert Event.objects.count() == events


def test_ensure_operator_prints_a_random_password_once_and_never_resets_it(capsys):
    call_command("ensure_operator")
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password) and len(password) >= 12
    call_command("ensure_operator")
    assert "password:" not in capsys.readouterr().out
    user.refresh_from_db()
    assert user.check_password(password)


def test_overview_needs_login_and_shows_counts(client, admin_client):
    assert client.get("/").status_code == 302
    call_command("load_demo")
    response = admin_client.get("/")
    assert response.status_code == 200
    assert b"agent.stale" in response.content
