"""The task analytics and the task metrics against real tasks (pools/queue.py, pools/dispatch.py):
three tasks submitted, two claimed by w1 — one completed, one failed for good — one left queued
because no agent meets its requirements."""

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from assignments.jobs import usage_rollup_recent
from config.actors import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks_scene(api, make_agent, operator_token, pool):
    _agent, worker = make_agent("w1", capabilities=["chrome"], task_capacity=3)
    for task_id, priority, needs in (("t-urgent", "urgent", ["chrome"]), ("t-low", "low", ["chrome"]),
                                     ("t-stuck", "normal", ["firefox"])):
        r = api.post("/api/tasks", {"pool": "k8s-prod", "task_id": task_id, "priority": priority,
                                    "requirements": {"capabilities": needs}}, token=operator_token)
        assert r.status_code == 201, r.content
    claimed = api.post("/api/agents/w1/tasks/claim", {"max": 5}, token=worker).json()["tasks"]
    assert sorted(t["task_id"] for t in claimed) == ["t-low", "t-urgent"]
    assert api.post("/api/tasks/t-urgent/start", {"attempt": 1}, token=worker).status_code == 200
    assert api.post("/api/tasks/t-urgent/complete", {"attempt": 1, "result": {"ok": True}}, token=worker).status_code == 200
    r = api.post("/api/tasks/t-low/fail", {"attempt": 1, "error": "boom", "retry": False}, token=worker)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    return operator_token


def _metrics() -> dict:
    body = Client().get("/metrics").content.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_count_queued_tasks_by_priority_and_ended_tasks_by_outcome(tasks_scene):
    m = _metrics()
    queued = {labels: v for (name, labels), v in m.items() if name == "tether_tasks_queued"}
    assert queued[(("pool", "k8s-prod"), ("priority", "normal"))] == 1
    assert sum(queued.values()) == 1
    outcome = {dict(labels)["outcome"]: v for (name, labels), v in m.items() if name == "tether_tasks_total"}
    assert outcome == {"completed": 1, "failed": 1, "cancelled": 0, "expired": 0}


def test_task_series_are_live_and_the_rollup_adds_waits_and_run_times(api, tasks_scene):
    token = tasks_scene
    (point,) = api.get("/api/analytics/tasks?window=1h", token=token).json()["series"][-1:]
    assert (point["enqueued"], point["dequeued"], point["queue_depth"], point["completed"], point["failed"]) == (
        3, 2, 1, 1, 1)
    usage_rollup_recent(actor=Actor.system("test-rollup"))
    body = api.get("/api/analytics/tasks?window=1h", token=token).json()
    assert body["tasks_recorded"] is True
    point = body["series"][-1]
    assert point["assigned"] == 2 and point["average_wait_seconds"] is not None and point["queue_depth"] == 1
    (w1,) = [a for a in api.get("/api/analytics/agents?window=1h", token=token).json()["results"] if a["agent_id"] == "w1"]
    assert (w1["tasks_completed"], w1["tasks_failed"]) == (1, 1)
    assert w1["average_task_seconds"] is not None and w1["average_task_seconds"] >= 0
