"""Endpoints DESIGN.md names that were missing (issue 10, item 17): PATCH /api/pools/{name},
GET /api/alerts with acknowledge and resolve, POST /api/profiles/{profile_id}/release."""

import pytest

from assignments.alerts import alert_raise
from assignments.models import Alert, Assignment, Event
from pools.models import AgentPool
from tests.api.conftest import SYSTEM, assert_error

pytestmark = pytest.mark.django_db


# --- PATCH /api/pools/{name} ----------------------------------------------------------------------


def test_an_operator_changes_a_pools_strategy_and_timeouts(api, pool, operator_token):
    response = api.patch(f"/api/pools/{pool.name}", {"strategy": "round_robin", "assignment_idle_timeout_seconds": 8},
                         token=operator_token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["strategy"], body["assignment_idle_timeout_seconds"]) == ("round_robin", 8)
    assert "enrollment_token" not in body
    pool.refresh_from_db()
    assert (pool.strategy, pool.assignment_idle_timeout_seconds) == ("round_robin", 8)
    assert Event.objects.filter(type="pool.updated", pool=pool.name).exists()


def test_patching_a_pool_is_for_operators_and_refuses_bad_fields(api, pool, make_agent, operator_token):
    _, agent_token = make_agent("a1")
    assert_error(api.patch(f"/api/pools/{pool.name}", {"strategy": "random"}, token=agent_token), 403, "forbidden")
    assert_error(api.patch(f"/api/pools/{pool.name}", {"strategy": "vibes"}, token=operator_token), 400, "validation_error")
    assert_error(api.patch(f"/api/pools/{pool.name}", {"name": "renamed"}, token=operator_token), 400, "validation_error")
    assert_error(api.patch("/api/pools/ghost", {"strategy": "random"}, token=operator_token), 404, "not_found")
    assert AgentPool.objects.get(pk=pool.pk).strategy == pool.strategy


# --- alerts ---------------------------------------------------------------------------------------


@pytest.fixture
def alerts(pool):
    stale, _ = alert_raise(kind=Alert.Kind.AGENT_STALE, actor=SYSTEM, message="a1 is stale",
                           dedup_key="agent_stale:a1", pool=pool.name, agent_id="a1")
    burst, _ = alert_raise(kind=Alert.Kind.CONFLICT_BURST, actor=SYSTEM, message="p1 fought over",
                           dedup_key="conflict_burst:p1", pool="other", profile_id="p1")
    return stale, burst


def test_alerts_are_listed_and_filtered(api, alerts, make_agent):
    stale, burst = alerts
    _, token = make_agent("reader")
    every = api.get("/api/alerts", token=token).json()
    assert {a["alert_id"] for a in every["results"]} == {str(stale.alert_id), str(burst.alert_id)}
    assert every["count"] == 2
    by_kind = api.get("/api/alerts?kind=agent_stale", token=token).json()["results"]
    assert [a["alert_id"] for a in by_kind] == [str(stale.alert_id)]
    by_pool = api.get("/api/alerts?pool=other", token=token).json()["results"]
    assert [a["alert_id"] for a in by_pool] == [str(burst.alert_id)]
    assert api.get("/api/alerts?status=resolved", token=token).json()["results"] == []
    assert len(api.get("/api/alerts?status=unresolved", token=token).json()["results"]) == 2
    assert_error(api.get("/api/alerts?status=bogus", token=token), 400, "validation_error")
    assert_error(api.get("/api/alerts?kind=bogus", token=token), 400, "validation_error")


def test_an_operator_acknowledges_then_resolves_an_alert(api, alerts, operator_token):
    stale, _ = alerts
    acked = api.post(f"/api/alerts/{stale.alert_id}/acknowledge", token=operator_token)
    assert acked.status_code == 200, acked.content
    assert acked.json()["status"] == "acknowledged" and acked.json()["acknowledged_by"]
    resolved = api.post(f"/api/alerts/{stale.alert_id}/resolve", {"reason": "replaced the node"}, token=operator_token)
    assert resolved.status_code == 200, resolved.content
    assert resolved.json()["status"] == "resolved"
    assert Event.objects.filter(type="alert.resolved", data__alert_id=str(stale.alert_id)).count() == 1
    # Again: nothing changes, no new event.
    assert api.post(f"/api/alerts/{stale.alert_id}/resolve", token=operator_token).json()["status"] == "resolved"
    assert Event.objects.filter(type="alert.resolved", data__alert_id=str(stale.alert_id)).count() == 1


def test_alert_actions_are_for_operators_and_name_real_alerts(api, alerts, make_agent, operator_token):
    stale, _ = alerts
    _, token = make_agent("a1")
    assert_error(api.post(f"/api/alerts/{stale.alert_id}/acknowledge", token=token), 403, "forbidden")
    assert_error(api.post(f"/api/alerts/{stale.alert_id}/resolve", token=token), 403, "forbidden")
    assert_error(api.post("/api/alerts/00000000-0000-0000-0000-000000000000/resolve", token=operator_token),
                 404, "not_found")
    assert_error(api.post(f"/api/alerts/{stale.alert_id}/resolve", {"why": "x"}, token=operator_token),
                 400, "validation_error")
    assert Alert.objects.get(pk=stale.pk).status == Alert.Status.OPEN


# --- POST /api/profiles/{profile_id}/release --------------------------------------------------------


def test_the_holder_releases_by_profile_and_again_changes_nothing(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    taken = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()

    released = api.post("/api/profiles/p1/release", {"agent_id": "a1"}, token=token)
    assert released.status_code == 200, released.content
    assert (released.json()["assignment_id"], released.json()["status"]) == (taken["assignment_id"], "released")
    again = api.post("/api/profiles/p1/release", {}, token=token)  # agent_id defaults to the caller
    assert again.status_code == 200 and again.json()["status"] == "released"
    assert Event.objects.filter(type="assignment.released", assignment_id=taken["assignment_id"]).count() == 1


def test_release_by_profile_keeps_the_rules_of_delete(api, make_agent, make_profile, operator_token):
    _, holder = make_agent("a1")
    _, other = make_agent("a2")
    make_profile("p1")
    make_profile("free")
    taken = api.post("/api/assignments", {"profile_id": "p1"}, token=holder).json()

    assert_error(api.post("/api/profiles/p1/release", {"agent_id": "a1"}, token=other), 403, "forbidden")
    error = assert_error(api.post("/api/profiles/p1/release", {"agent_id": "a2"}, token=other), 409, "conflict")
    assert error["details"]["holder_agent_id"] == "a1"
    assert_error(api.post("/api/profiles/p1/release", {"agent_id": "a1", "fencing_token": taken["fencing_token"] + 1},
                          token=holder), 409, "stale_fencing_token")
    assert_error(api.post("/api/profiles/free/release", {"agent_id": "a1"}, token=holder), 404, "not_found")
    assert_error(api.post("/api/profiles/ghost/release", {"agent_id": "a1"}, token=holder), 404, "not_found")
    assert_error(api.post("/api/profiles/p1/release", {"agent_id": "a1", "force": True}, token=holder), 400,
                 "validation_error")
    assert Assignment.objects.get(assignment_id=taken["assignment_id"]).status == "active"

    # An operator on a live agent: releasing, as DELETE does.
    forced = api.post("/api/profiles/p1/release", {"agent_id": "a1"}, token=operator_token)
    assert forced.status_code == 200 and forced.json()["status"] == "releasing"
