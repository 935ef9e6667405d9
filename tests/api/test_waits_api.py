"""The REST shape of waiting takes, selection, several profiles, outcome reports and quarantine."""

import pytest

from assignments.models import Assignment
from tests.api.conftest import assert_error


@pytest.fixture
def two(make_agent, make_profile):
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1", tags=["eu"], region="eu")
    make_profile("p2", tags=["eu"], region="eu")
    return t1, t2


def test_a_waiting_take_is_202_with_a_pending_assignment_and_its_position(api, two):
    t1, t2 = two
    held = api.post("/api/assignments", {"profile_id": "p1"}, token=t1)
    assert held.status_code == 201
    waiting = api.post("/api/assignments", {"profile_id": "p1", "wait_seconds": 30}, token=t2)
    assert waiting.status_code == 202, waiting.content
    body = waiting.json()
    assert (body["status"], body["agent_id"], body["queue_position"]) == ("pending", "a2", 1)
    assert body["wait_until"]
    detail = api.get(f"/api/assignments/{body['assignment_id']}", token=t2).json()
    assert detail["queue_position"] == 1
    # The profile's holder is still a1; the released profile goes to a2 with a new token.
    assert api.get("/api/profiles/p1/assignment", token=t2).json()["assignment"]["agent_id"] == "a1"
    api.delete(f"/api/assignments/{held.json()['assignment_id']}", token=t1)
    served = api.get(f"/api/assignments/{body['assignment_id']}", token=t2).json()
    assert served["status"] == "active" and served["queue_position"] is None
    assert served["fencing_token"] == held.json()["fencing_token"] + 1
    beat = api.post("/api/agents/a2/heartbeat", {"assignments": []}, token=t2).json()
    assert beat["assigned"] == [body["assignment_id"]]


@pytest.mark.parametrize("body", [
    {"profile_id": "p1", "wait_seconds": -1},
    {"profile_id": "p1", "wait_seconds": 3601},
    {"profile_id": "p1", "wait_seconds": "soon"},
    {"profile_id": "p1", "profile_requirements": {"tags": ["eu"]}},
    {"profile_requirements": {}},
    {"profile_requirements": {"colour": "red"}},
    {"profile_ids": []},
    {"profile_ids": ["p1", "p2"], "wait_seconds": 5},
    {"profile_id": "p1", "priority": 5000},
    {"profile_id": "p1", "wait_second": 30},
    {},
])
def test_bad_take_requests_are_400_and_write_nothing(api, two, body):
    t1, _ = two
    assert_error(api.post("/api/assignments", body, token=t1), 400, "validation_error")
    assert not Assignment.objects.exists()


def test_selection_and_no_profile_available(api, two):
    t1, t2 = two
    got = api.post("/api/assignments", {"profile_requirements": {"tags": ["eu"], "region": "eu"}}, token=t1)
    assert got.status_code == 201 and got.json()["profile_id"] in ("p1", "p2")
    assert api.post("/api/assignments", {"profile_requirements": {"tags": ["eu"]}}, token=t2).status_code == 201
    error = assert_error(api.post("/api/assignments", {"profile_requirements": {"tags": ["eu"]}}, token=t2),
                         409, "no_profile_available")
    assert error["details"]["profile_requirements"] == {"tags": ["eu"]}


def test_several_profiles_at_once(api, two):
    t1, t2 = two
    got = api.post("/api/assignments", {"profile_ids": ["p2", "p1"]}, token=t1)
    assert got.status_code == 201
    assert [a["profile_id"] for a in got.json()["assignments"]] == ["p2", "p1"]
    assert_error(api.post("/api/assignments", {"profile_ids": ["p1"]}, token=t2), 409, "conflict")


def test_deadlock_is_409_with_the_cycle(api, two):
    t1, t2 = two
    api.post("/api/assignments", {"profile_id": "p1"}, token=t1)
    api.post("/api/assignments", {"profile_id": "p2"}, token=t2)
    assert api.post("/api/assignments", {"profile_id": "p2", "wait_seconds": 30}, token=t1).status_code == 202
    error = assert_error(api.post("/api/assignments", {"profile_id": "p1", "wait_seconds": 30}, token=t2), 409, "deadlock")
    assert [step["agent_id"] for step in error["details"]["cycle"]] == ["a2", "a1"]


def test_reports_quarantine_and_clear(api, two, operator_token):
    t1, t2 = two
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=t1).json()
    assert_error(api.post("/api/profiles/p1/report", {"outcome": "success"}, token=t2), 403, "forbidden")
    assert_error(api.post("/api/profiles/p1/report", {"outcome": "fine"}, token=t1), 400, "validation_error")
    assert_error(api.post("/api/profiles/p1/report", {"outcome": "success", "extra": 1}, token=t1), 400, "validation_error")
    assert_error(api.post("/api/profiles/nope/report", {"outcome": "success"}, token=t1), 404, "not_found")
    report = api.post("/api/profiles/p1/report", {"outcome": "banned", "detail": "banned"}, token=t1)
    assert report.status_code == 200 and report.json()["quarantined"] is True
    assert report.json()["outcomes"]["banned"] == 1
    api.delete(f"/api/assignments/{a['assignment_id']}", token=t1)
    assert_error(api.post("/api/assignments", {"profile_id": "p1"}, token=t2), 409, "profile_quarantined")
    assert_error(api.post("/api/profiles/p1/clear-quarantine", {}, token=t1), 403, "forbidden")
    cleared = api.post("/api/profiles/p1/clear-quarantine", {"reason": "checked"}, token=operator_token)
    assert cleared.status_code == 200 and cleared.json()["quarantined"] is False
    assert api.post("/api/assignments", {"profile_id": "p1"}, token=t2).status_code == 201


def test_pool_guardrail_fields_are_writable_and_checked(api, operator_token):
    created = api.post("/api/pools", {"name": "guarded", "conflict_policy": "priority", "preemption": True,
                                      "profile_cooldown_seconds": 60, "profile_daily_quota": 10}, token=operator_token)
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["conflict_policy"], body["preemption"], body["profile_cooldown_seconds"], body["profile_daily_quota"]) == (
        "priority", True, 60, 10)
    assert "queued_requests" in api.get("/api/pools/guarded", token=operator_token).json().get("counts", {"queued_requests": 0})
    assert_error(api.post("/api/pools", {"name": "bad", "conflict_policy": "lottery"}, token=operator_token), 400, "validation_error")
    assert_error(api.post("/api/pools", {"name": "bad", "profile_cooldown_seconds": -5}, token=operator_token), 400, "validation_error")


def test_a_fractional_wait_is_accepted(api, two):
    t1, t2 = two
    api.post("/api/assignments", {"profile_id": "p1"}, token=t1)
    waiting = api.post("/api/assignments", {"profile_id": "p1", "wait_seconds": 1.5}, token=t2)
    assert waiting.status_code == 202, waiting.content
