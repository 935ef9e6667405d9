"""Registration, heartbeats, discovery, and the read endpoints' shapes: pagination, filters, events, metrics."""

from agents.models import Agent
from assignments.models import Event
from pools.services import pool_update
from tests.api.conftest import SYSTEM, assert_error


def test_register_with_enrollment_token_returns_the_token_once(api, pool, enrollment_token):
    body = {
        "agent_id": "worker-1", "pool": pool.name, "agent_type": "worker", "capabilities": ["chrome", "octo"],
        "services": ["browser"], "endpoints": {"cdp": "ws://10.0.0.1:9222"}, "tags": ["eu"], "metadata": {"k": "v"},
        "version": "1.2.3", "region": "eu-west", "capacity": 3, "weight": 2.5, "priority": 7,
        "load_metrics": {"cpu": 10, "memory": 20},
    }
    response = api.post("/api/agents/register", body, headers={"X-Enrollment-Token": enrollment_token})
    assert response.status_code == 201, response.content
    agent = response.json()
    assert agent["token"].startswith("agt_")
    for field, value in body.items():
        assert agent[field] == value, field
    assert agent["status"] == "active" and agent["health_score"] == 1.0
    detail = api.get("/api/agents/worker-1", token=agent["token"]).json()
    assert "token" not in detail
    assert detail["capacity"] == 3


def test_heartbeat_tells_the_agent_what_to_drop_and_what_to_pick_up(api, make_agent, make_profile, operator_token):
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1")
    make_profile("p2")
    mine = api.post("/api/assignments", {"profile_id": "p1"}, token=t1).json()
    theirs = api.post("/api/assignments", {"profile_id": "p2"}, token=t2).json()
    api.post("/api/agents/a2/drain", token=operator_token)  # p2 moves to a1
    response = api.post(
        "/api/agents/a1/heartbeat", {"load_metrics": {"cpu": 95}, "assignments": [mine["assignment_id"]]}, token=t1
    )
    assert response.status_code == 200
    reply = response.json()
    assert reply["status"] == "active"
    assert reply["health_score"] < 1.0
    assert reply["revoked"] == []
    assert reply["assigned"] == [theirs["assignment_id"]]
    reply = api.post("/api/agents/a2/heartbeat", {"assignments": [theirs["assignment_id"]]}, token=operator_token).json()
    assert reply["revoked"] == [theirs["assignment_id"]]


def test_status_put_sets_busy_with_metrics(api, make_agent):
    _, token = make_agent("a1")
    response = api.put("/api/agents/a1/status", {"status": "busy", "load_metrics": {"cpu": 50}}, token=token)
    assert response.json()["status"] == "busy"
    assert response.json()["load_metrics"] == {"cpu": 50}


def test_discover_filters_by_every_criterion(api, make_agent, operator_token):
    make_agent("a1", capabilities=["chrome", "octo"], agent_type="worker", region="eu")
    make_agent("a2", capabilities=["chrome"], agent_type="worker", region="eu")
    make_agent("a3", capabilities=["chrome", "octo"], agent_type="provider", region="us")
    response = api.post(
        "/api/agents/discover", {"capabilities": ["octo", "chrome"], "agent_type": "worker", "region": "eu",
                                 "pool": "k8s-prod", "status": "active", "min_health_score": 0.5}, token=operator_token,
    )
    assert [a["agent_id"] for a in response.json()["results"]] == ["a1"]
    assert response.json()["count"] == 1


def test_agent_assignments_are_live_by_default(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    done = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    api.delete(f"/api/assignments/{done['assignment_id']}", token=token)
    live = api.post("/api/assignments", {"profile_id": "p2"}, token=token).json()
    assert [a["assignment_id"] for a in api.get("/api/agents/a1/assignments", token=token).json()["results"]] == [live["assignment_id"]]
    everything = api.get("/api/agents/a1/assignments?status=all", token=token).json()["results"]
    assert len(everything) == 2
    released = api.get("/api/agents/a1/assignments?status=released", token=token).json()["results"]
    assert [a["assignment_id"] for a in released] == [done["assignment_id"]]


def test_lists_are_paginated(api, make_agent, make_profile, operator_token):
    make_agent("a1", capacity=10)
    for i in range(3):
        make_profile(f"p{i}")
        api.post("/api/assignments", {"profile_id": f"p{i}", "agent_id": "a1"}, token=operator_token)
    page = api.get("/api/assignments?page_size=2", token=operator_token).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 3 and len(page["results"]) == 2 and page["previous"] is None
    assert page["next"] is not None
    second = api.get(page["next"].replace("http://testserver", ""), token=operator_token).json()
    assert len(second["results"]) == 1 and second["next"] is None and second["previous"] is not None


def test_assignment_filters(api, make_agent, make_profile, operator_token):
    make_agent("a1")
    make_agent("a2")
    make_profile("p1")
    make_profile("p2")
    api.post("/api/assignments", {"profile_id": "p1", "agent_id": "a1", "workflow_id": "wf-a"}, token=operator_token)
    api.post("/api/assignments", {"profile_id": "p2", "agent_id": "a2", "workflow_id": "wf-b"}, token=operator_token)

    def ids(query):
        return sorted(a["profile_id"] for a in api.get(f"/api/assignments?{query}", token=operator_token).json()["results"])

    assert ids("agent_id=a1") == ["p1"]
    assert ids("profile_id=p2") == ["p2"]
    assert ids("workflow_id=wf-b") == ["p2"]
    assert ids("pool=k8s-prod") == ["p1", "p2"]
    assert ids("pool=other") == []
    assert ids("status=active,idle") == ["p1", "p2"]
    assert ids("status=released") == []


def test_pools_carry_counts_and_the_enrollment_token_only_on_create(api, make_agent, make_profile, operator_token):
    created = api.post("/api/pools", {"name": "fresh", "strategy": "round_robin", "min_health_score": 0.3}, token=operator_token)
    assert created.status_code == 201
    assert created.json()["enrollment_token"].startswith("enr_")
    assert created.json()["strategy"] == "round_robin"
    make_agent("a1")
    make_profile("p1", pool="k8s-prod")
    api.post("/api/assignments", {"profile_id": "p1", "agent_id": "a1"}, token=operator_token)
    pool = api.get("/api/pools/k8s-prod", token=operator_token).json()
    assert "enrollment_token" not in pool
    assert pool["counts"]["agents"] == 1 and pool["counts"]["agents_by_status"]["active"] == 1
    assert pool["counts"]["live_assignments"] == 1 and pool["counts"]["profiles"] == 1
    names = [p["name"] for p in api.get("/api/pools", token=operator_token).json()["results"]]
    assert names == ["fresh", "k8s-prod"]


def test_events_page_from_since_with_filters(api, make_agent, make_profile, operator_token):
    _, token = make_agent("a1")
    make_profile("p1")
    start = Event.objects.order_by("-seq").values_list("seq", flat=True).first()
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    api.delete(f"/api/assignments/{a['assignment_id']}", token=token)
    page = api.get(f"/api/events?since={start}", token=operator_token).json()
    assert [e["type"] for e in page["results"]] == ["assignment.created", "assignment.released"]
    assert page["last_seq"] == page["results"][-1]["seq"]
    assert set(page["results"][0]) == {
        "seq", "type", "occurred_at", "actor", "assignment_id", "profile_id", "agent_id", "pool", "from_status", "to_status", "data",
    }
    one = api.get(f"/api/events?since={start}&limit=1", token=operator_token).json()
    assert len(one["results"]) == 1 and f"since={one['last_seq']}" in one["next"]
    only = api.get(f"/api/events?since={start}&types=assignment.released", token=operator_token).json()["results"]
    assert [e["type"] for e in only] == ["assignment.released"]
    prefix = api.get("/api/events?types=agent.,pool.", token=operator_token).json()["results"]
    assert {e["type"] for e in prefix} == {"agent.registered", "pool.created"}
    assert api.get("/api/events?profile_id=nope", token=operator_token).json()["results"] == []
    assert [e["agent_id"] for e in api.get(f"/api/events?since={start}&agent_id=a1", token=operator_token).json()["results"]] == ["a1", "a1"]


def test_metrics_over_a_window(api, make_agent, make_profile, operator_token):
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    make_profile("p1")
    make_profile("p2")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=t1).json()
    api.post("/api/assignments", {"profile_id": "p1"}, token=t2)  # a conflict
    api.delete(f"/api/assignments/{a['assignment_id']}", token=t1)
    b = api.post("/api/assignments", {"profile_id": "p2"}, token=t2).json()
    api.patch(f"/api/assignments/{b['assignment_id']}", {"status": "failed", "error": "boom"}, token=t2)
    api.post("/api/assignments", {"profile_id": "p2"}, token=t2)
    m = api.get("/api/assignments/metrics?window=1h", token=operator_token).json()
    assert m["window_seconds"] == 3600
    assert (m["total"], m["active"], m["successful"], m["failed"], m["conflicts"]) == (3, 1, 1, 1, 1)
    assert m["conflict_rate"] == 0.25
    assert m["average_duration_seconds"] is not None
    assert {p["profile_id"] for p in m["profile_utilization"]} == {"p1", "p2"}
    by_agent = {a["agent_id"]: a for a in m["agent_efficiency"]}
    assert by_agent["a1"]["efficiency"] == 1.0 and by_agent["a2"]["efficiency"] == 0.0
    assert api.get("/api/assignments/metrics", token=operator_token).json()["window_seconds"] == 86400
    assert_error(api.get("/api/assignments/metrics?window=0", token=operator_token), 400, "validation_error")


def test_throttled_requests_get_429_with_retry_after(api, make_agent, monkeypatch):
    from django.core.cache import cache

    from config.api import throttling
    from config.api.throttling import CredentialRateThrottle

    # Inside one window whatever the wall clock says (a fixed-window counter).
    monkeypatch.setattr(throttling, "_now", lambda: 1_800_000_030.0)
    _, token = make_agent("a1")
    cache.clear()
    old = CredentialRateThrottle.THROTTLE_RATES
    CredentialRateThrottle.THROTTLE_RATES = {"credential": "3/min"}
    try:
        codes = [api.get("/api/agents", token=token).status_code for _ in range(4)]
        response = api.get("/api/agents", token=token)
    finally:
        CredentialRateThrottle.THROTTLE_RATES = old
        cache.clear()
    assert codes == [200, 200, 200, 429]
    error = assert_error(response, 429, "throttled")
    assert response["Retry-After"] == "30"
    assert error["details"]["retry_after"] == 30


def test_rotating_the_enrollment_token_revokes_the_old_one(api, pool, enrollment_token):
    """An operator issues a new enrollment token (admin action, `pool_update`): the old one stops
    registering agents at once, the new one works, and agents already registered keep their own tokens."""
    first = api.post("/api/agents/register", {"agent_id": "before", "pool": pool.name},
                     headers={"X-Enrollment-Token": enrollment_token})
    assert first.status_code == 201
    _, new_token = pool_update(name=pool.name, actor=SYSTEM, rotate_enrollment_token=True)
    assert new_token and new_token != enrollment_token

    refused = api.post("/api/agents/register", {"agent_id": "after-old", "pool": pool.name},
                       headers={"X-Enrollment-Token": enrollment_token})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert not Agent.objects.filter(agent_id="after-old").exists()
    # The old token cannot re-key an agent it registered either.
    again = api.post("/api/agents/register", {"agent_id": "before", "pool": pool.name},
                     headers={"X-Enrollment-Token": enrollment_token})
    assert again.status_code == 403

    accepted = api.post("/api/agents/register", {"agent_id": "after-new", "pool": pool.name},
                        headers={"X-Enrollment-Token": new_token})
    assert accepted.status_code == 201
    assert api.get("/api/agents/before", token=first.json()["token"]).status_code == 200


def test_the_written_out_agent_representation_matches_drfs_field_walk(make_agent):
    """AgentSerializer writes its fields out by hand for speed: it must say exactly what DRF's own
    field-by-field representation says, for a fresh agent and one with every field set."""
    from rest_framework import serializers

    from agents.api.serializers import AgentSerializer
    from agents.models import Agent

    make_agent("plain")
    make_agent("full", capabilities=["chrome", "octo"], services=["s"], endpoints={"http": "x"}, tags=["eu"],
               metadata={"k": [1, {"n": None}]}, version="1.2", region="eu-west", weight=2.5, priority=3,
               load_metrics={"cpu": 12.5, "memory": 40}, task_capacity=3)
    Agent.objects.filter(agent_id="plain").update(last_heartbeat=None)
    for agent in Agent.objects.select_related("pool").filter(agent_id__in=["plain", "full"]):
        assert AgentSerializer(agent).data == serializers.Serializer.to_representation(AgentSerializer(), agent)


def test_discover_applies_every_filter_in_the_database_before_the_limit(api, make_agent, operator_token):
    """Capabilities (all of) are filtered before the limit, so a small limit still finds matches
    that sort after many non-matching agents."""
    for i in range(6):
        make_agent(f"plain-{i}", capabilities=["firefox"])
    make_agent("zz-match", capabilities=["chrome", "octo", "firefox"])
    make_agent("zz-half", capabilities=["chrome"])
    body = api.post("/api/agents/discover", {"capabilities": ["octo", "chrome"], "limit": 1}, token=operator_token).json()
    assert [a["agent_id"] for a in body["results"]] == ["zz-match"]


def test_heartbeat_names_the_running_browsers_the_agent_does_not_hold(api, make_agent, make_profile):
    """`running_profiles` is what the agent's launcher says runs; `stop_profiles` is the part of it
    the agent does not hold (active or idle), so its browser must stop."""
    _, t1 = make_agent("a1")
    _, t2 = make_agent("a2")
    for p in ("p1", "p2", "p3"):
        make_profile(p)
    mine = api.post("/api/assignments", {"profile_id": "p1", "agent_id": "a1"}, token=t1).json()
    api.post("/api/assignments", {"profile_id": "p2", "agent_id": "a2"}, token=t2)
    reply = api.post("/api/agents/a1/heartbeat", {"assignments": [mine["assignment_id"]],
                                                  "running_profiles": ["p1", "p2", "p3"]}, token=t1)
    assert reply.status_code == 200, reply.content
    assert reply.json()["stop_profiles"] == ["p2", "p3"]  # another's, and nobody's
    assert api.post("/api/agents/a1/heartbeat", {}, token=t1).json()["stop_profiles"] == []
    assert_error(api.post("/api/agents/a1/heartbeat", {"running_profiles": ["bad id!"]}, token=t1), 400, "validation_error")
    assert_error(api.post("/api/agents/a1/heartbeat", {"running_profiles": "p1"}, token=t1), 400, "validation_error")
