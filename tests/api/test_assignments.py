"""Taking and releasing profiles over HTTP: conflicts name the holder, fencing, idempotency, the race."""

import uuid

import pytest
from django.test import Client

from assignments.models import Assignment, Event, IdempotencyKey
from tests.api.conftest import assert_error


def test_second_agent_gets_409_naming_the_holder(api, make_agent, make_profile):
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1")
    first = api.post("/api/assignments", {"profile_id": "p1", "agent_id": "a1", "workflow_id": "wf-1"}, token=t1).json()
    error = assert_error(api.post("/api/assignments", {"profile_id": "p1", "agent_id": "a2"}, token=t2), 409, "conflict")
    assert error["details"]["holder_agent_id"] == "a1"
    assert error["details"]["holder_assignment_id"] == first["assignment_id"]
    assert Event.objects.filter(type="assignment.conflict", agent_id="a2").count() == 1


def test_agent_may_omit_its_own_agent_id(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    response = api.post("/api/assignments", {"profile_id": "p1"}, token=token)
    assert response.status_code == 201
    assert response.json()["agent_id"] == "a1"
    assert response.json()["fencing_token"] == 1


def test_release_is_idempotent(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    for _ in range(2):
        response = api.delete(f"/api/assignments/{a['assignment_id']}", token=token)
        assert response.status_code == 200
        assert response.json()["status"] == "released"
    assert Event.objects.filter(type="assignment.released").count() == 1


def test_patch_changes_status_and_metadata(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    response = api.patch(
        f"/api/assignments/{a['assignment_id']}", {"status": "idle", "metadata": {"step": 3}, "fencing_token": 1}, token=token
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "idle"
    assert response.json()["metadata"] == {"step": 3}


def test_patch_failed_ends_the_assignment(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    response = api.patch(f"/api/assignments/{a['assignment_id']}", {"status": "failed", "error": "browser crashed"}, token=token)
    assert response.json()["status"] == "failed"
    assert response.json()["release_reason"] == "failed"


# --- Fencing -------------------------------------------------------------------------------------


@pytest.fixture
def reassigned(api, make_agent, make_profile, operator_token):
    """p1 taken by a1 (fencing token 1), then a1 drained: p1 moves to a2 with token 2."""
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=t1).json()
    assert api.post("/api/agents/a1/drain", token=operator_token).status_code == 200
    moved = api.get(f"/api/assignments/{a['assignment_id']}", token=t2).json()
    assert moved["agent_id"] == "a2" and moved["fencing_token"] == 2
    return a["assignment_id"], t1, t2


def test_release_with_a_stale_fencing_token_is_refused(api, reassigned):
    assignment_id, t1, t2 = reassigned
    error = assert_error(api.delete(f"/api/assignments/{assignment_id}", {"fencing_token": 1}, token=t2), 409, "stale_fencing_token")
    assert error["details"]["current_fencing_token"] == 2
    assert Assignment.objects.get(assignment_id=assignment_id).status == "active"
    # In the query string too (for clients that send no DELETE body).
    assert_error(api.delete(f"/api/assignments/{assignment_id}?fencing_token=1", token=t2), 409, "stale_fencing_token")


def test_patch_with_a_stale_fencing_token_is_refused(api, reassigned):
    assignment_id, t1, _ = reassigned
    assert_error(
        api.patch(f"/api/assignments/{assignment_id}", {"status": "idle", "fencing_token": 1}, token=t1), 409, "stale_fencing_token"
    )
    assert Assignment.objects.get(assignment_id=assignment_id).status == "active"


def test_current_fencing_token_is_accepted(api, reassigned):
    assignment_id, _, t2 = reassigned
    response = api.delete(f"/api/assignments/{assignment_id}", {"fencing_token": 2}, token=t2)
    assert response.status_code == 200
    assert response.json()["status"] == "released"


# --- Idempotency ---------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_answer(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    body = {"profile_id": "p1", "workflow_id": "wf"}
    first = api.post("/api/assignments", body, token=token, headers={"Idempotency-Key": "take-1"})
    events = Event.objects.count()
    second = api.post("/api/assignments", body, token=token, headers={"Idempotency-Key": "take-1"})
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Assignment.objects.count() == 1
    assert Event.objects.count() == events


def test_same_idempotency_key_with_another_body_is_422(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": "k"})
    events = Event.objects.count()
    assert_error(
        api.post("/api/assignments", {"profile_id": "p2"}, token=token, headers={"Idempotency-Key": "k"}),
        422,
        "idempotency_key_reused",
    )
    assert Assignment.objects.count() == 1
    assert Event.objects.count() == events


def test_idempotency_keys_are_scoped_per_credential(api, make_agent, make_profile):
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1")
    make_profile("p2")
    assert api.post("/api/assignments", {"profile_id": "p1"}, token=t1, headers={"Idempotency-Key": "k"}).status_code == 201
    second = api.post("/api/assignments", {"profile_id": "p2"}, token=t2, headers={"Idempotency-Key": "k"})
    assert second.status_code == 201
    assert second.json()["agent_id"] == "a2"


def test_an_error_answer_is_replayed_too(api, make_agent, make_profile):
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1")
    held = api.post("/api/assignments", {"profile_id": "p1"}, token=t1).json()
    assert_error(api.post("/api/assignments", {"profile_id": "p1"}, token=t2, headers={"Idempotency-Key": "k"}), 409, "conflict")
    api.delete(f"/api/assignments/{held['assignment_id']}", token=t1)
    # The profile is free now, but the retry gets the first answer and takes nothing.
    assert_error(api.post("/api/assignments", {"profile_id": "p1"}, token=t2, headers={"Idempotency-Key": "k"}), 409, "conflict")
    assert not Assignment.objects.filter(agent__agent_id="a2").exists()


def test_idempotent_register_returns_the_same_working_token(api, pool, enrollment_token):
    headers = {"X-Enrollment-Token": enrollment_token, "Idempotency-Key": "boot-1"}
    first = api.post("/api/agents/register", {"agent_id": "a9", "pool": pool.name}, headers=headers)
    second = api.post("/api/agents/register", {"agent_id": "a9", "pool": pool.name}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["token"] == second.json()["token"]
    assert Event.objects.filter(type="agent.registered", agent_id="a9").count() == 1
    assert api.get("/api/agents/a9", token=first.json()["token"]).status_code == 200
    # The stored answer does not hold the token in clear.
    stored = bytes(IdempotencyKey.objects.get(key="boot-1").response_body)
    assert first.json()["token"].encode() not in stored


def test_expired_idempotency_key_is_forgotten(api, make_agent, make_profile):
    from django.utils import timezone

    _, token = make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": "k"})
    IdempotencyKey.objects.update(expires_at=timezone.now())
    response = api.post("/api/assignments", {"profile_id": "p2"}, token=token, headers={"Idempotency-Key": "k"})
    assert response.status_code == 201
    assert response.json()["profile_id"] == "p2"


def test_bad_idempotency_key_is_400(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    assert_error(
        api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": "x" * 201}),
        400,
        "validation_error",
    )
    assert not Assignment.objects.exists()


# --- The race ------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_64_concurrent_takes_of_4_profiles_give_exactly_4_assignments(make_agent, make_profile, run_in_threads):
    tokens = [make_agent(f"racer-{i}")[1] for i in range(16)]
    for p in range(4):
        make_profile(f"hot-{p}")

    def take(i):
        client = Client()
        response = client.post(
            "/api/assignments",
            {"profile_id": f"hot-{i % 4}", "agent_id": f"racer-{i % 16}"},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {tokens[i % 16]}",
        )
        return response.status_code, response.json()

    results = run_in_threads(64, take)
    assert not [r for r in results if isinstance(r, BaseException)], results
    codes = [status for status, _ in results]
    assert codes.count(201) == 4, codes
    assert codes.count(409) == 60, codes
    assert all(body["error"]["code"] == "conflict" for status, body in results if status == 409)
    taken = sorted(body["profile_id"] for status, body in results if status == 201)
    assert taken == ["hot-0", "hot-1", "hot-2", "hot-3"]
    assert Assignment.objects.filter(status="active").count() == 4


def test_unknown_assignment_is_404(api, make_agent):
    _, token = make_agent("a1")
    assert_error(api.get(f"/api/assignments/{uuid.uuid4()}", token=token), 404, "not_found")
    assert_error(api.delete(f"/api/assignments/{uuid.uuid4()}", token=token), 404, "not_found")


def test_expired_idempotency_keys_are_pruned(api, make_agent, make_profile):
    from datetime import timedelta

    from django.utils import timezone

    from config.api.idempotency import idempotency_keys_prune

    _, token = make_agent("a1")
    make_profile("p1")
    api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": "k"})
    assert idempotency_keys_prune() == 0
    assert idempotency_keys_prune(now=timezone.now() + timedelta(days=2)) == 1
    assert not IdempotencyKey.objects.exists()


def test_a_bogus_enrollment_token_leaves_no_idempotency_row(api, db):
    response = api.post("/api/agents/register", {"agent_id": "intruder", "pool": "k8s-prod"},
                        headers={"X-Enrollment-Token": "enr_not-a-real-token", "Idempotency-Key": "fill-the-table"})
    assert response.status_code == 403
    assert not IdempotencyKey.objects.exists()


def test_the_scheduled_job_prunes_expired_idempotency_keys(api, make_agent, make_profile):
    from datetime import timedelta

    from django.utils import timezone

    from config.jobs import JOBS, job_run

    assert "idempotency_keys_prune" in JOBS
    _, token = make_agent("a1")
    make_profile("p1")
    api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": "k"})
    assert job_run("idempotency_keys_prune")["deleted"] == 0
    assert job_run("idempotency_keys_prune", now=timezone.now() + timedelta(days=2))["deleted"] == 1
    assert not IdempotencyKey.objects.exists()
