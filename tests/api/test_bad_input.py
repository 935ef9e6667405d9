"""Bad input of every kind gets a clear 4xx in the one error shape — never a 500 — and writes nothing."""

import json

import pytest

from agents.models import Agent
from assignments.models import Assignment, Event, IdempotencyKey, Profile
from pools.models import AgentPool
from tests.api.conftest import assert_error


@pytest.fixture
def scene(api, make_agent, make_profile):
    _, token = make_agent("a1")
    make_profile("p1")
    held = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    make_profile("p2")
    return token, held["assignment_id"]


def _snapshot():
    return (
        AgentPool.objects.count(),
        list(Agent.objects.order_by("pk").values_list("agent_id", "status", "load_metrics", "capacity", "token_hash")),
        list(Profile.objects.order_by("pk").values_list("profile_id", "fencing_token", "metadata")),
        list(Assignment.objects.order_by("pk").values_list("assignment_id", "status", "metadata", "fencing_token")),
        Event.objects.count(),
    )


BIG = {"blob": "x" * (16 * 1024)}

# name → (method, path, raw body or JSON-able body, expected status, expected code)
CASES = {
    # malformed JSON
    "truncated JSON": ("POST", "/api/assignments", b'{"profile_id": "p2"', 400, "parse_error"),
    "not JSON at all": ("POST", "/api/assignments", b"profile_id=p2", 400, "parse_error"),
    "NaN is not JSON": ("PUT", "/api/agents/a1/status", b'{"status": "busy", "load_metrics": {"cpu": NaN}}', 400, "parse_error"),
    "invalid UTF-8": ("POST", "/api/assignments", b'{"profile_id": "p\xff"}', 400, "parse_error"),
    "deeply nested": ("POST", "/api/assignments", b'{"metadata": ' + b"[" * 100000 + b"]" * 100000 + b"}", 413, "request_too_large"),
    "nested past the parser": ("POST", "/api/assignments", b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "parse_error"),
    "a list instead of an object": ("POST", "/api/assignments", [{"profile_id": "p2"}], 400, "validation_error"),
    # wrong types
    "metadata as a list": ("POST", "/api/assignments", {"profile_id": "p2", "metadata": [1, 2]}, 400, "validation_error"),
    "capacity as a word": ("POST", "/api/agents/register", {"agent_id": "a7", "pool": "k8s-prod", "capacity": "lots"}, 400, "validation_error"),
    "capabilities as a string": ("POST", "/api/agents/discover", {"capabilities": "chrome"}, 400, "validation_error"),
    "reported assignments not uuids": ("POST", "/api/agents/a1/heartbeat", {"assignments": ["nope"]}, 400, "validation_error"),
    "fencing token as text": ("DELETE", "/api/assignments/{held}", {"fencing_token": "one"}, 400, "validation_error"),
    "enabled as an object": ("POST", "/api/profiles", {"profile_id": "p9", "enabled": {"x": 1}}, 400, "validation_error"),
    # unknown enum values
    "unknown agent type": ("POST", "/api/agents/register", {"agent_id": "a7", "pool": "k8s-prod", "agent_type": "robot"}, 400, "validation_error"),
    "unknown agent status": ("PUT", "/api/agents/a1/status", {"status": "sleeping"}, 400, "validation_error"),
    "unknown assignment status": ("PATCH", "/api/assignments/{held}", {"status": "paused"}, 400, "validation_error"),
    "unknown pool strategy": ("POST", "/api/pools", {"name": "p-x", "strategy": "vibes"}, 400, "validation_error"),
    "unknown status filter": ("GET", "/api/assignments?status=bogus", None, 400, "validation_error"),
    "unknown status of agent's assignments": ("GET", "/api/agents/a1/assignments?status=bogus", None, 400, "validation_error"),
    "bad metrics window": ("GET", "/api/assignments/metrics?window=forever", None, 400, "validation_error"),
    "metrics since after until": ("GET", "/api/assignments/metrics?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", None, 400, "validation_error"),
    "metrics since not a time": ("GET", "/api/assignments/metrics?since=%00", None, 400, "validation_error"),
    "metrics pool too long": ("GET", "/api/assignments/metrics?pool=" + "p" * 65, None, 400, "validation_error"),
    "unknown analytics bucket": ("GET", "/api/analytics/utilization?bucket=minute", None, 400, "validation_error"),
    "hourly series too long": ("GET", "/api/analytics/tasks?bucket=hour&window=60d", None, 400, "validation_error"),
    "ranking limit not a number": ("GET", "/api/analytics/contention?limit=lots", None, 400, "validation_error"),
    "unknown agents sort": ("GET", "/api/analytics/agents?sort=random", None, 400, "validation_error"),
    "bad events since": ("GET", "/api/events?since=-1", None, 400, "validation_error"),
    "bad events type": ("GET", "/api/events?types=DROP TABLE", None, 400, "validation_error"),
    # missing fields
    "take without profile_id": ("POST", "/api/assignments", {}, 400, "validation_error"),
    "register without agent_id": ("POST", "/api/agents/register", {"pool": "k8s-prod"}, 400, "validation_error"),
    "status without status": ("PUT", "/api/agents/a1/status", {}, 400, "validation_error"),
    "empty body": ("POST", "/api/profiles", b"", 400, "validation_error"),
    # oversized
    "metadata over 16 KiB": ("POST", "/api/assignments", {"profile_id": "p2", "metadata": BIG}, 400, "validation_error"),
    "agent metadata over 16 KiB": ("POST", "/api/agents/register", {"agent_id": "a7", "pool": "k8s-prod", "metadata": BIG}, 400, "validation_error"),
    "body over the limit": ("POST", "/api/assignments", {"profile_id": "p2", "workflow_id": "w" * (200 * 1024)}, 413, "request_too_large"),
    "body over Django's own limit": ("POST", "/api/assignments", {"profile_id": "p2", "workflow_id": "w" * (300 * 1024)}, 413, "request_too_large"),
    "register body over Django's own limit": ("POST", "/api/agents/register", {"agent_id": "a8", "pool": "k8s-prod", "metadata": {"x": "y" * (3 * 1024 * 1024)}}, 413, "request_too_large"),
    "too many reported assignments": ("POST", "/api/agents/a1/heartbeat", {"assignments": ["00000000-0000-0000-0000-000000000000"] * 1001}, 400, "validation_error"),
    # unknown ids
    "unknown agent": ("GET", "/api/agents/ghost", None, 404, "not_found"),
    "unknown pool": ("GET", "/api/pools/ghost", None, 404, "not_found"),
    "unknown profile": ("GET", "/api/profiles/ghost", None, 404, "not_found"),
    "unknown profile lookup": ("GET", "/api/profiles/ghost/assignment", None, 404, "not_found"),
    "take an unknown profile": ("POST", "/api/assignments", {"profile_id": "ghost"}, 404, "not_found"),
    "heartbeat of an unknown agent (operator)": ("POST", "/api/agents/ghost/drain", None, 404, "not_found"),
    "not a uuid": ("GET", "/api/assignments/not-a-uuid", None, 404, "not_found"),
    "unknown endpoint": ("GET", "/api/nothing-here", None, 404, "not_found"),
    "register into an unknown pool (operator)": ("POST", "/api/agents/register", {"agent_id": "a7", "pool": "ghost"}, 400, "validation_error"),
    # NUL bytes and odd unicode in ids
    "NUL in a path id": ("GET", "/api/agents/a%001", None, 404, "not_found"),
    "emoji in a path id": ("GET", "/api/profiles/%F0%9F%98%80", None, 404, "not_found"),
    "right-to-left override in a path id": ("GET", "/api/agents/a%E2%80%AE1", None, 404, "not_found"),
    "over-long path id": ("GET", "/api/agents/" + "a" * 300, None, 404, "not_found"),
    "NUL in a body id": ("POST", "/api/assignments", {"profile_id": "p\u00002"}, 400, "parse_error"),
    "lone surrogate in a body id": ("POST", "/api/assignments", b'{"profile_id": "p\\ud8002"}', 400, "parse_error"),
    "NUL in metadata": ("POST", "/api/assignments", {"profile_id": "p2", "metadata": {"k": "a\u0000b"}}, 400, "parse_error"),
    "emoji in a registered agent_id": ("POST", "/api/agents/register", {"agent_id": "bot-😀", "pool": "k8s-prod"}, 400, "validation_error"),
    "control character in workflow_id": ("POST", "/api/assignments", {"profile_id": "p2", "workflow_id": "a\u0007b"}, 400, "validation_error"),
    "NUL in a query filter": ("GET", "/api/assignments?agent_id=a%001", None, 400, "validation_error"),
    # negative or absurd load metrics
    "negative cpu": ("POST", "/api/agents/a1/heartbeat", {"load_metrics": {"cpu": -5}}, 400, "validation_error"),
    "cpu above 100": ("POST", "/api/agents/a1/heartbeat", {"load_metrics": {"cpu": 250}}, 400, "validation_error"),
    "absurd huge number": ("PUT", "/api/agents/a1/status", {"status": "busy", "load_metrics": {"memory": 1e308}}, 400, "validation_error"),
    "negative connections": ("POST", "/api/agents/a1/heartbeat", {"load_metrics": {"active_connections": -1}}, 400, "validation_error"),
    "boolean as a metric": ("POST", "/api/agents/a1/heartbeat", {"load_metrics": {"cpu": True}}, 400, "validation_error"),
    "metric as an object": ("POST", "/api/agents/a1/heartbeat", {"load_metrics": {"cpu": {"x": 1}}}, 400, "validation_error"),
    "absurd capacity": ("POST", "/api/agents/register", {"agent_id": "a7", "pool": "k8s-prod", "capacity": 10**12}, 400, "validation_error"),
    "negative weight": ("POST", "/api/agents/register", {"agent_id": "a7", "pool": "k8s-prod", "weight": -1}, 400, "validation_error"),
    "absurd page size": ("GET", "/api/assignments?page=99999", None, 404, "not_found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(api, scene, operator_token, case):
    token, held = scene
    method, path, body, status, code = CASES[case]
    use_operator = "operator" in case or path.startswith(("/api/pools", "/api/profiles")) and method == "POST"
    if path.startswith("/api/agents/register"):
        use_operator = True
    before = _snapshot()
    raw = body if isinstance(body, bytes) else (json.dumps(body) if body is not None else None)
    response = api.request(
        method, path.replace("{held}", held), raw=raw, token=operator_token if use_operator else token
    )
    assert_error(response, status, code)
    assert _snapshot() == before


def test_wrong_content_type_is_415(api, scene):
    token, _ = scene
    assert_error(
        api.post("/api/assignments", raw="profile_id=p2", content_type="application/x-www-form-urlencoded", token=token),
        415,
        "unsupported_media_type",
    )


def test_wrong_method_is_405(api, scene):
    token, _ = scene
    response = api.put("/api/assignments", {}, token=token)
    assert_error(response, 405, "method_not_allowed")


def test_malformed_authorization_header_is_401(api, scene):
    for header in ("Token", "Token a b", "Token \u00e9\u00e9", "Token abc%00"):
        response = api.client.get("/api/pools", HTTP_AUTHORIZATION=header)
        assert_error(response, 401, "not_authenticated")


def test_wrong_enrollment_token_is_403_and_registers_nothing(api, pool):
    response = api.post("/api/agents/register", {"agent_id": "a7", "pool": pool.name}, headers={"X-Enrollment-Token": "enr_wrong"})
    assert_error(response, 403, "forbidden")
    assert not Agent.objects.filter(agent_id="a7").exists()


def test_enrollment_token_cannot_take_over_another_pools_agent(api, make_agent, enrollment_token, db):
    from pools.services import pool_create
    from tests.api.conftest import SYSTEM

    other, _ = pool_create(name="other", actor=SYSTEM)
    make_agent("theirs", in_pool=other)
    response = api.post(
        "/api/agents/register", {"agent_id": "theirs", "pool": "k8s-prod"}, headers={"X-Enrollment-Token": enrollment_token}
    )
    assert_error(response, 403, "forbidden")
    assert Agent.objects.get(agent_id="theirs").pool == other


def test_failed_idempotent_request_leaves_no_claim_behind_on_bad_input(api, scene):
    token, _ = scene
    api.post("/api/assignments", raw="{", token=token, headers={"Idempotency-Key": "k"})
    assert not IdempotencyKey.objects.exists()


def test_invalid_utf8_in_a_query_filter_matches_nothing(api, scene):
    # Django decodes it with replacement characters: a harmless value that names no pool.
    token, _ = scene
    response = api.get("/api/agents?pool=%ED%A0%80", token=token)
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_database_outage_is_a_503_in_the_error_shape_not_a_500(api, make_agent, monkeypatch):
    from django.db import OperationalError

    from assignments import selectors

    _, token = make_agent("a-outage")

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(selectors, "profile_assignment", down)
    response = api.get("/api/profiles/p1/assignment", token=token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"


def test_a_page_that_is_not_a_number_is_a_400(api, make_agent):
    _, token = make_agent("a-pager")
    assert_error(api.get("/api/agents?page=abc", token=token), 400, "validation_error")
    assert_error(api.get("/api/agents?page=0", token=token), 400, "validation_error")
    assert api.get("/api/agents?page=1", token=token).status_code == 200
    assert_error(api.get("/api/agents?page=999", token=token), 404, "not_found")
