"""Hostile input acceptance testing found (issue 10, items 3, 5, 11 and 15): each gets a clear 400
in the one error shape and writes nothing."""

import json

import pytest

from agents.models import Agent
from assignments.models import Assignment, Event, Profile
from config.errors import ValidationFailed
from config.validation import MAX_JSON_DEPTH, clean_json_object, clean_load_metrics, json_depth
from pools.models import AgentPool
from tests.api.conftest import assert_error

HUGE = "1" + "0" * 400  # 10**400: a valid JSON number no float can hold


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


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


# name → (method, path, raw body, who: agent | operator | enrollment, expected field named in details)
CASES = {
    # 10**400 in load_metrics (was a 500: OverflowError converting it to a float)
    "huge integer metric in a heartbeat": ("POST", "/api/agents/a1/heartbeat", '{"load_metrics": {"x": %s}}' % HUGE, "agent", "load_metrics"),
    "huge integer cpu in a heartbeat": ("POST", "/api/agents/a1/heartbeat", '{"load_metrics": {"cpu": %s}}' % HUGE, "agent", "load_metrics"),
    "huge integer metric in a status": ("PUT", "/api/agents/a1/status", '{"status": "busy", "load_metrics": {"x": %s}}' % HUGE, "agent", "load_metrics"),
    "huge integer metric at registration": ("POST", "/api/agents/register", '{"agent_id": "a9", "pool": "k8s-prod", "load_metrics": {"x": %s}}' % HUGE, "enrollment", "load_metrics"),
    "huge integer weight at registration": ("POST", "/api/agents/register", '{"agent_id": "a9", "pool": "k8s-prod", "weight": %s}' % HUGE, "enrollment", "weight"),
    "huge integer health filter": ("POST", "/api/agents/discover", '{"min_health_score": %s}' % HUGE, "agent", "min_health_score"),
    "huge integer in metadata": ("POST", "/api/assignments", '{"profile_id": "p2", "metadata": {"n": %s}}' % HUGE, "agent", "metadata"),
    # nesting: one depth cap for every JSON field
    "metadata nested past the cap": ("POST", "/api/assignments", json.dumps({"profile_id": "p2", "metadata": _nested(MAX_JSON_DEPTH + 1)}), "agent", "metadata"),
    "endpoints nested past the cap": ("POST", "/api/agents/register", json.dumps({"agent_id": "a9", "pool": "k8s-prod", "endpoints": _nested(MAX_JSON_DEPTH + 1)}), "enrollment", "endpoints"),
    "profile metadata nested past the cap": ("POST", "/api/profiles", json.dumps({"profile_id": "p9", "metadata": _nested(MAX_JSON_DEPTH + 1)}), "operator", "metadata"),
    "load metrics nested past the cap": ("POST", "/api/agents/a1/heartbeat", json.dumps({"load_metrics": {"x": _nested(MAX_JSON_DEPTH)}}), "agent", "load_metrics"),
    # unknown fields are refused by name, everywhere
    "unknown field in a take": ("POST", "/api/assignments", '{"profile_id": "p2", "wait": 5}', "agent", "wait"),
    "unknown field in discover": ("POST", "/api/agents/discover", '{"capability": ["chrome"]}', "agent", "capability"),
    "unknown field at registration": ("POST", "/api/agents/register", '{"agent_id": "a9", "pool": "k8s-prod", "wait": 3}', "enrollment", "wait"),
    "unknown field in a heartbeat": ("POST", "/api/agents/a1/heartbeat", '{"assignments": [], "cpu": 3}', "agent", "cpu"),
    "unknown field in a status": ("PUT", "/api/agents/a1/status", '{"status": "busy", "why": "x"}', "agent", "why"),
    "unknown field in an update": ("PATCH", "/api/assignments/{held}", '{"status": "idle", "reason": "x"}', "agent", "reason"),
    "unknown field in a release": ("DELETE", "/api/assignments/{held}", '{"force": true}', "agent", "force"),
    "unknown field in a new profile": ("POST", "/api/profiles", '{"profile_id": "p9", "owner": "x"}', "operator", "owner"),
    "unknown field in a new pool": ("POST", "/api/pools", '{"name": "p-x", "size": 3}', "operator", "size"),
    # no lenient coercions
    "capacity as a numeric string": ("POST", "/api/agents/register", '{"agent_id": "a9", "pool": "k8s-prod", "capacity": "10"}', "enrollment", "capacity"),
    "weight as a numeric string": ("POST", "/api/agents/register", '{"agent_id": "a9", "pool": "k8s-prod", "weight": "1.5"}', "enrollment", "weight"),
    "capacity as a boolean": ("POST", "/api/agents/register", '{"agent_id": "a9", "pool": "k8s-prod", "capacity": true}', "enrollment", "capacity"),
    "agent_id as a number": ("POST", "/api/agents/register", '{"agent_id": 7, "pool": "k8s-prod"}', "enrollment", "agent_id"),
    "an integer as a reported uuid": ("POST", "/api/agents/a1/heartbeat", '{"assignments": [1]}', "agent", "assignments"),
    "fencing token as a numeric string": ("DELETE", "/api/assignments/{held}", '{"fencing_token": "1"}', "agent", "fencing_token"),
    "enabled as a string": ("POST", "/api/profiles", '{"profile_id": "p9", "enabled": "true"}', "operator", "enabled"),
    "limit as a numeric string": ("POST", "/api/agents/discover", '{"limit": "5"}', "agent", "limit"),
    "heartbeat timeout as a float": ("POST", "/api/pools", '{"name": "p-x", "heartbeat_timeout_seconds": 5.0}', "operator", "heartbeat_timeout_seconds"),
    "profile_id as a number": ("POST", "/api/assignments", '{"profile_id": 2}', "agent", "profile_id"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_a_400_naming_the_field_and_writes_nothing(api, scene, operator_token, enrollment_token, case):
    token, held = scene
    method, path, raw, who, field = CASES[case]
    credentials = {"agent": {"token": token}, "operator": {"token": operator_token},
                   "enrollment": {"headers": {"X-Enrollment-Token": enrollment_token}}}[who]
    before = _snapshot()
    response = api.request(method, path.replace("{held}", held), raw=raw, **credentials)
    error = assert_error(response, 400, "validation_error")
    assert field in error["details"], error
    assert _snapshot() == before


def test_a_body_nested_far_past_every_cap_is_a_parse_error(api, scene):
    token, _ = scene
    body = json.dumps({"profile_id": "p2", "metadata": _nested(950)})
    assert_error(api.post("/api/assignments", raw=body, token=token), 400, "parse_error")


def test_the_query_string_fencing_token_of_a_release_is_still_read_as_a_number(api, scene):
    token, held = scene
    fencing = Assignment.objects.get(assignment_id=held).fencing_token
    response = api.delete(f"/api/assignments/{held}?fencing_token={fencing}", token=token)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "released"


# --- the checks themselves, below the API (the admin and jobs use them too) ----------------------


def test_json_depth_is_measured_without_recursion():
    assert json_depth(5) == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth(_nested(100_000), limit=40) == 41  # stops early, never overflows the stack


def test_clean_json_object_caps_depth_and_whole_numbers():
    assert clean_json_object("metadata", _nested(MAX_JSON_DEPTH)) == _nested(MAX_JSON_DEPTH)
    with pytest.raises(ValidationFailed) as exc:
        clean_json_object("metadata", _nested(MAX_JSON_DEPTH + 1))
    assert exc.value.details == {"metadata": ["nested too deeply"]}
    with pytest.raises(ValidationFailed):
        clean_json_object("metadata", {"n": [10**400]})
    assert clean_json_object("metadata", {"n": 2**63 - 1}) == {"n": 2**63 - 1}


def test_clean_load_metrics_refuses_integers_no_float_can_hold():
    with pytest.raises(ValidationFailed):
        clean_load_metrics({"x": 10**400})
    with pytest.raises(ValidationFailed):
        clean_load_metrics({"cpu": 10**400})
    assert clean_load_metrics({"cpu": 50, "x": 10**6}) == {"cpu": 50, "x": 10**6}


def test_paging_parameters_are_strict_and_documented_with_their_bounds(api, scene):
    import yaml

    token, _ = scene
    for query in ("page_size=0", "page_size=501", "page_size=ten", "page_size=-1"):
        assert_error(api.get(f"/api/agents?{query}", token=token), 400, "validation_error")
    assert api.get("/api/agents?page_size=500", token=token).status_code == 200
    schema = yaml.safe_load(api.get("/api/schema/", token=token).content)
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/agents"]["get"]["parameters"]}
    assert parameters["page"] == {"type": "integer", "minimum": 1}
    assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": 500}


QUERY_CASES = [
    "/api/agents?status=",
    "/api/agents?agent_type=",
    "/api/pools?platform=",
    "/api/profiles?enabled=1822",
    "/api/profiles?enabled=yes",
    "/api/assignments?status=",
    "/api/assignments/metrics?window=",
    "/api/events?profile_id=",
    "/api/events?since=",
    "/api/alerts?kind=",
    "/api/alerts?status=",
]


@pytest.mark.parametrize("path", QUERY_CASES)
def test_a_filter_given_empty_or_not_understood_is_refused_not_ignored(api, scene, path):
    token, _ = scene
    name = path.split("?")[1].split("=")[0]
    error = assert_error(api.get(path, token=token), 400, "validation_error")
    assert name in error["details"], error


def test_well_formed_filters_still_work(api, scene):
    token, _ = scene
    assert api.get("/api/profiles?enabled=true", token=token).json()["count"] == 2
    assert api.get("/api/profiles?enabled=false", token=token).json()["count"] == 0
    assert api.get("/api/agents?status=active,busy", token=token).json()["count"] == 1
