"""No secret in cookies, and /health's details only for operators (issue 10, item 9)."""

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from config.actors import OPERATORS_GROUP

pytestmark = pytest.mark.django_db


def test_the_enrollment_token_shown_in_the_admin_never_travels_in_a_cookie(admin_client):
    response = admin_client.post(reverse("admin:pools_agentpool_add"), {
        "name": "new-pool", "platform": "docker", "region": "eu", "strategy": "least_connections",
        "heartbeat_timeout_seconds": 30, "assignment_idle_timeout_seconds": 600, "min_health_score": 0.5,
    })
    assert response.status_code == 302
    for cookie in response.cookies.values():
        assert "enr_" not in cookie.value, cookie.key
    shown = admin_client.get(response["Location"])
    page = shown.content.decode()
    assert "Enrollment token for new-pool" in page and "enr_" in page
    for cookie in shown.cookies.values():
        assert "enr_" not in cookie.value, cookie.key
    # Shown once.
    assert "enr_" not in admin_client.get(response["Location"]).content.decode()


def _break(monkeypatch):
    from dashboard import views

    def broken():
        raise RuntimeError("connection to server at 10.1.2.3, port 6379 failed")

    monkeypatch.setattr(views, "_cache", broken)


def test_anonymous_health_says_what_is_up_but_not_where_or_why(client, monkeypatch):
    _break(monkeypatch)
    body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"] == {"ok": False}
    assert all(set(check) == {"ok"} for check in body["checks"].values())
    assert "10.1.2.3" not in str(body) and "6379" not in str(body)


def test_operators_see_healths_details_by_session_or_token(admin_client, monkeypatch):
    _break(monkeypatch)
    assert "10.1.2.3" in admin_client.get("/health").json()["checks"]["cache"]["error"]
    user = User.objects.create_user("mon", password=None)
    user.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
    token = Token.objects.create(user=user).key
    body = Client().get("/health", HTTP_AUTHORIZATION=f"Token {token}").json()
    assert "10.1.2.3" in body["checks"]["cache"]["error"]
    # A non-operator's token, or a bogus one, gets the public answer.
    plain = Token.objects.create(user=User.objects.create_user("viewer", password=None)).key
    assert Client().get("/health", HTTP_AUTHORIZATION=f"Token {plain}").json()["checks"]["cache"] == {"ok": False}
    assert Client().get("/health", HTTP_AUTHORIZATION="Token bogus\x00").json()["checks"]["cache"] == {"ok": False}
