"""The task API at DESIGN.md's paths: submit (and its alias), batch, list and detail, claim with
long-poll, start/complete/fail/cancel with attempt fencing, status, queues, clear, stats — and bad
input answered with a clear 4xx in the one error shape, with nothing written."""

import json
import time

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from agents.services import agent_mark_stale
from assignments.models import Event
from config.api.views import RECEIVED
from pools.dispatch import tasks_place
from pools.models import Task
from tests.api.conftest import SYSTEM, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker(make_agent):
    _agent, token = make_agent("w1", capabilities=["chrome"], task_capacity=3)
    return token


def _submit(api, token, **body):
    body.setdefault("pool", "k8s-prod")
    return api.post("/api/tasks", body, token=token)


def test_submit_and_its_alias_answer_201_with_the_task(api, operator_token, pool):
    r = _submit(api, operator_token, task_id="t1", priority="high", payload={"url": "x"},
                requirements={"capabilities": ["chrome"]})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["task_id"] == "t1" and body["status"] == "queued" and body["attempt"] == 1
    assert body["pool"] == "k8s-prod" and body["priority"] == "high" and body["payload"] == {"url": "x"}
    assert body["requirements"] == {"capabilities": ["chrome"]} and body["agent_id"] is None
    r = api.post("/api/tasks/submit", {"pool": "k8s-prod"}, token=operator_token)
    assert r.status_code == 201 and r.json()["priority"] == "normal" and len(r.json()["task_id"]) == 36
    r = api.post("/api/tasks/submit/", {"pool": "k8s-prod"}, token=operator_token)
    assert r.status_code == 201


def test_submit_honours_idempotency_key(api, operator_token, pool):
    headers = {"Idempotency-Key": "submit-1"}
    first = api.post("/api/tasks", {"pool": "k8s-prod"}, token=operator_token, headers=headers)
    again = api.post("/api/tasks", {"pool": "k8s-prod"}, token=operator_token, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["task_id"] == again.json()["task_id"]
    assert Task.objects.count() == 1


BAD = {
    "unknown priority": ({"priority": "asap"}, 400, "validation_error", "priority"),
    "unknown pool": ({"pool": "nowhere"}, 400, "validation_error", "pool"),
    "payload not an object": ({"payload": [1, 2]}, 400, "validation_error", "payload"),
    "oversize payload": ({"payload": {"x": "y" * 20_000}}, 400, "validation_error", "payload"),
    "unknown field": ({"colour": "blue"}, 400, "validation_error", "colour"),
    "unknown requirement": ({"requirements": {"gpu": 1}}, 400, "validation_error", "requirements"),
    "profile_requirements not yet": ({"requirements": {"profile_requirements": {"tags": ["eu"]}}}, 400,
                                     "validation_error", "requirements"),
    "negative max_attempts": ({"max_attempts": -1}, 400, "validation_error", "max_attempts"),
    "bad deadline": ({"deadline": "tomorrow"}, 400, "validation_error", "deadline"),
    "past deadline": ({"deadline": "2001-01-01T00:00:00Z"}, 400, "validation_error", "deadline"),
    "reserved task id": ({"task_id": "queues"}, 400, "validation_error", "task_id"),
    "bad task id": ({"task_id": "a/b"}, 400, "validation_error", "task_id"),
}


@pytest.mark.parametrize("body, status, code, field", BAD.values(), ids=BAD.keys())
def test_bad_submissions_get_a_clear_4xx_and_write_nothing(api, operator_token, pool, body, status, code, field):
    error = assert_error(_submit(api, operator_token, **body), status, code)
    assert field in error["details"] or field in error["message"], error
    assert not Task.objects.exists()
    assert not Event.objects.filter(type__startswith="task.").exists()


def test_a_used_task_id_is_409(api, operator_token, pool):
    assert _submit(api, operator_token, task_id="dup").status_code == 201
    assert_error(_submit(api, operator_token, task_id="dup"), 409, "conflict")


def test_who_may_submit(api, pool, make_agent, user_token, worker):
    assert _submit(api, worker).status_code == 201  # an agent of the pool
    assert_error(_submit(api, user_token), 403, "forbidden")
    assert_error(api.post("/api/tasks", {"pool": "k8s-prod"}), 401, "not_authenticated")


def test_batch_is_all_or_nothing_and_bounded(api, operator_token, pool):
    r = api.post("/api/tasks/batch", {"tasks": [{"pool": "k8s-prod", "priority": p} for p in ("low", "urgent")]},
                 token=operator_token)
    assert r.status_code == 201 and [t["priority"] for t in r.json()["tasks"]] == ["low", "urgent"]
    bad = {"tasks": [{"pool": "k8s-prod"}, {"pool": "k8s-prod", "priority": "nope"}]}
    assert_error(api.post("/api/tasks/batch", bad, token=operator_token), 400, "validation_error")
    too_many = {"tasks": [{"pool": "k8s-prod"}] * 501}
    assert_error(api.post("/api/tasks/batch", too_many, token=operator_token), 400, "validation_error")
    assert_error(api.post("/api/tasks/batch", {"tasks": []}, token=operator_token), 400, "validation_error")
    assert_error(api.post("/api/tasks/batch", {"tasks": [], "x": 1}, token=operator_token), 400, "validation_error")
    assert Task.objects.count() == 2


def test_the_agent_protocol_over_http(api, operator_token, worker, pool):
    for task_id, priority in [("low", "low"), ("urgent", "urgent"), ("gpu", "urgent")]:
        requirements = {"capabilities": ["gpu"]} if task_id == "gpu" else {}
        assert _submit(api, operator_token, task_id=task_id, priority=priority, requirements=requirements).status_code == 201
    r = api.post("/api/agents/w1/tasks/claim", {"max": 5}, token=worker)
    assert r.status_code == 200, r.content
    tasks = r.json()["tasks"]
    assert [t["task_id"] for t in tasks] == ["urgent", "low"]  # gpu: no agent can serve it
    assert all(t["agent_id"] == "w1" and t["status"] == "assigned" for t in tasks)
    # The heartbeat reply names them too.
    r = api.post("/api/agents/w1/heartbeat", {}, token=worker)
    assert [t["task_id"] for t in r.json()["tasks"]] == ["urgent", "low"]
    assert_error(api.post("/api/tasks/urgent/start", {"attempt": 2}, token=worker), 409, "stale_fencing_token")
    assert_error(api.post("/api/tasks/urgent/start", {}, token=worker), 400, "validation_error")
    assert_error(api.post("/api/tasks/urgent/start", {"attempt": 1, "force": True}, token=worker), 400,
                 "validation_error")
    r = api.post("/api/tasks/urgent/start", {"attempt": 1}, token=worker)
    assert r.status_code == 200 and r.json()["status"] == "running"
    r = api.post("/api/tasks/urgent/complete", {"attempt": 1, "result": {"ok": True}}, token=worker)
    assert r.status_code == 200 and r.json()["status"] == "completed" and r.json()["result"] == {"ok": True}
    r = api.post("/api/tasks/low/fail", {"attempt": 1, "error": "flaky", "retry": True}, token=worker)
    assert r.status_code == 200 and (r.json()["status"], r.json()["attempt"]) == ("queued", 2)
    assert_error(api.post("/api/tasks/low/complete", {"attempt": 1}, token=worker), 409, "stale_fencing_token")
    r = api.get("/api/tasks/low", token=worker)
    assert r.json()["error"] == "flaky"


def test_another_agent_may_not_act_on_a_task(api, operator_token, worker, make_agent):
    _agent, other = make_agent("w2")
    _submit(api, operator_token, task_id="t")
    api.post("/api/agents/w1/tasks/claim", {}, token=worker)
    assert_error(api.post("/api/tasks/t/complete", {"attempt": 1}, token=other), 403, "forbidden")
    assert_error(api.post("/api/agents/w1/tasks/claim", {}, token=other), 403, "forbidden")


def test_a_lost_agents_late_complete_is_409_and_changes_nothing(api, operator_token, worker, make_agent):
    _submit(api, operator_token, task_id="t")
    api.post("/api/agents/w1/tasks/claim", {}, token=worker)
    api.post("/api/tasks/t/start", {"attempt": 1}, token=worker)
    agent_mark_stale(agent_id="w1", actor=SYSTEM)
    _agent, healthy = make_agent("w2")
    r = api.post("/api/agents/w2/tasks/claim", {}, token=healthy)
    assert [(t["task_id"], t["attempt"]) for t in r.json()["tasks"]] == [("t", 2)]
    assert_error(api.post("/api/tasks/t/complete", {"attempt": 1}, token=worker), 409, "stale_fencing_token")
    assert Task.objects.get(task_id="t").status == "assigned"


def test_claim_bad_input_and_unknown_agent(api, worker, operator_token):
    assert_error(api.post("/api/agents/w1/tasks/claim", {"max": -1}, token=worker), 400, "validation_error")
    assert_error(api.post("/api/agents/w1/tasks/claim", {"wait_seconds": 31}, token=worker), 400, "validation_error")
    assert_error(api.post("/api/agents/w1/tasks/claim", {"max": 1, "n": 2}, token=worker), 400, "validation_error")
    assert_error(api.post("/api/agents/ghost/tasks/claim", {}, token=operator_token), 404, "not_found")


@override_settings(TETHER_TASK_CLAIM_POLL_SECONDS=0.05)
def test_claim_long_polls_until_the_wait_ends_when_nothing_comes(api, worker):
    started = time.monotonic()
    r = api.post("/api/agents/w1/tasks/claim", {"wait_seconds": 0.3}, token=worker)
    assert r.status_code == 200 and r.json() == {"tasks": []}
    assert time.monotonic() - started >= 0.3


def _claim_received_ago(token, ago: float, wait: float, monkeypatch) -> tuple[int, dict, list[float]]:
    """A long-polling claim that reached the server `ago` seconds before a thread took it (the key
    config/wsgi_threads.py sets): (status, body, the sleeps it made)."""
    sleeps, sleep = [], time.sleep

    def recorded(seconds):
        sleeps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr("pools.api.task_views.time.sleep", recorded)
    r = APIClient().generic("POST", "/api/agents/w1/tasks/claim", json.dumps({"wait_seconds": wait}),
                            content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}",
                            **{RECEIVED: time.monotonic() - ago})
    return r.status_code, r.json(), sleeps


@override_settings(TETHER_TASK_CLAIM_POLL_SECONDS=0.05)
def test_a_long_poll_counts_its_wait_from_when_it_reached_the_server(worker, monkeypatch):
    """A claim that waited in line for a thread longer than its wait looks once and answers; one
    that waited part of it sleeps only the rest — never its whole wait on top of the line."""
    status, body, sleeps = _claim_received_ago(worker, ago=10, wait=5, monkeypatch=monkeypatch)
    assert (status, body, sleeps) == (200, {"tasks": []}, [])
    status, body, sleeps = _claim_received_ago(worker, ago=4.8, wait=5, monkeypatch=monkeypatch)
    assert (status, body) == (200, {"tasks": []})
    assert sleeps and sum(sleeps) <= 0.2, sleeps  # the rest of its wait, not 5 s


def test_cancel_by_operator_or_submitter(api, operator_token, worker, make_agent):
    _agent, other = make_agent("w2")
    assert _submit(api, worker, task_id="mine").status_code == 201
    assert_error(api.post("/api/tasks/mine/cancel", token=other), 403, "forbidden")
    r = api.post("/api/tasks/mine/cancel", token=worker)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    _submit(api, operator_token, task_id="ops")
    assert api.post("/api/tasks/ops/cancel", token=operator_token).json()["status"] == "cancelled"
    assert_error(api.post("/api/tasks/ghost/cancel", token=operator_token), 404, "not_found")


def test_list_detail_and_filters(api, operator_token, worker, pool):
    _submit(api, operator_token, task_id="a", priority="low")
    _submit(api, operator_token, task_id="b", priority="high")
    api.post("/api/agents/w1/tasks/claim", {}, token=worker)
    r = api.get("/api/tasks?status=assigned", token=worker)
    assert [t["task_id"] for t in r.json()["results"]] == ["b"]
    assert api.get("/api/tasks?priority=low", token=worker).json()["count"] == 1
    assert api.get("/api/tasks?agent_id=w1", token=worker).json()["count"] == 1
    assert api.get("/api/tasks?pool=k8s-prod", token=worker).json()["count"] == 2
    assert_error(api.get("/api/tasks?status=bogus", token=worker), 400, "validation_error")
    assert api.get("/api/tasks/a", token=worker).json()["task_id"] == "a"
    assert_error(api.get("/api/tasks/nope", token=worker), 404, "not_found")


def test_status_queues_stats_and_clear(api, operator_token, worker, pool):
    for i, priority in enumerate(["low", "low", "high", "urgent"]):
        _submit(api, operator_token, task_id=f"t{i}", priority=priority)
    api.post("/api/agents/w1/tasks/claim", {"max": 1}, token=worker)
    queues = api.get("/api/tasks/queues", token=worker).json()
    assert queues["queues"] == {"urgent": 0, "critical": 0, "high": 1, "normal": 0, "low": 2}
    assert queues["pools"]["k8s-prod"]["low"] == 2
    status = api.get("/api/tasks/status?pool=k8s-prod", token=worker).json()
    assert set(status) == {"submitted", "queued", "assigned", "running", "completed", "failed", "cancelled",
                           "expired", "average_distribution_seconds", "success_rate", "agents"}
    assert (status["submitted"], status["queued"], status["assigned"]) == (4, 3, 1)
    assert status["agents"]["w1"]["assigned"] == 1
    stats = api.get("/api/tasks/queues/stats", token=worker).json()
    assert set(stats["queues"]["low"]) == {"size", "oldest_age_seconds", "wait_p50_seconds", "wait_p95_seconds",
                                           "assigned_last_minute"}
    assert stats["queues"]["urgent"]["assigned_last_minute"] == 1
    assert_error(api.post("/api/tasks/queues/low/clear", token=worker), 403, "forbidden")
    assert_error(api.post("/api/tasks/queues/someday/clear", token=operator_token), 400, "validation_error")
    assert_error(api.post("/api/tasks/queues/low/clear?pool=nowhere", token=operator_token), 404, "not_found")
    r = api.post("/api/tasks/queues/low/clear?pool=k8s-prod", token=operator_token)
    assert r.status_code == 200 and r.json() == {"cleared": 2}
    assert Event.objects.filter(type="queue.cleared").count() == 1
    assert_error(api.get("/api/tasks/status?pool=nowhere", token=worker), 404, "not_found")


def test_pool_and_agent_task_capacity_through_the_api(api, operator_token, enrollment_token):
    r = api.post("/api/pools", {"name": "tasky", "task_capacity": 4}, token=operator_token)
    assert r.status_code == 201 and r.json()["task_capacity"] == 4
    assert_error(api.post("/api/pools", {"name": "bad", "task_capacity": 0}, token=operator_token), 400,
                 "validation_error")
    r = api.post("/api/agents/register", {"agent_id": "cap", "pool": "tasky", "task_capacity": 2},
                 token=operator_token)
    assert r.status_code == 201 and r.json()["task_capacity"] == 2
    for i in range(4):
        api.post("/api/tasks", {"pool": "tasky", "task_id": f"c{i}"}, token=operator_token)
    token = r.json()["token"]
    assert len(api.post("/api/agents/cap/tasks/claim", {"max": 10}, token=token).json()["tasks"]) == 2


def test_push_placement_then_claim_returns_what_was_pushed(api, operator_token, worker, pool):
    _submit(api, operator_token, task_id="pushed")
    assert [t.task_id for t in tasks_place(pool=pool)] == ["pushed"]
    assert [t["task_id"] for t in api.post("/api/agents/w1/tasks/claim", {}, token=worker).json()["tasks"]] == ["pushed"]


def test_pools_show_their_queue_size(api, operator_token, pool):
    for _ in range(3):
        _submit(api, operator_token)
    assert api.get("/api/pools/k8s-prod", token=operator_token).json()["counts"]["queued_tasks"] == 3
    assert api.get("/api/pools", token=operator_token).json()["results"][0]["counts"]["queued_tasks"] == 3


def test_task_list_and_queue_reads_do_a_fixed_number_of_queries(api, operator_token, worker, pool):
    def count(path):
        with CaptureQueriesContext(connection) as ctx:
            assert api.get(path, token=operator_token).status_code == 200
        return len(ctx)

    paths = ["/api/tasks", "/api/tasks/status", "/api/tasks/queues", "/api/tasks/queues/stats"]
    for i in range(3):
        _submit(api, operator_token, task_id=f"a{i}")
    api.post("/api/agents/w1/tasks/claim", {"max": 3}, token=worker)
    small = [count(p) for p in paths]
    for i in range(30):
        _submit(api, operator_token, task_id=f"b{i}", priority=["low", "high"][i % 2])
    api.post("/api/agents/w1/tasks/claim", {"max": 3}, token=worker)
    assert [count(p) for p in paths] == small
