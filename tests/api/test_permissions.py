"""The permission matrix: every endpoint kind × every kind of caller (DESIGN.md, invariant 7)."""

import pytest

from assignments.services import assignment_create
from tests.api.conftest import SYSTEM

ANON, SELF, OTHER, OPERATOR, USER = "anonymous", "agent-self", "agent-other", "operator", "user"

# (method, path, body) → expected status per caller. "{held}" is an assignment held by agent a1.
MATRIX = {
    "create pool": (("POST", "/api/pools", {"name": "new-pool"}), {ANON: 401, SELF: 403, OTHER: 403, OPERATOR: 201, USER: 403}),
    "list pools": (("GET", "/api/pools", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "pool detail": (("GET", "/api/pools/k8s-prod", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "register without enrollment token": (
        ("POST", "/api/agents/register", {"agent_id": "newbie", "pool": "k8s-prod"}),
        {ANON: 401, SELF: 403, OTHER: 403, OPERATOR: 201, USER: 403},
    ),
    "heartbeat": (("POST", "/api/agents/a1/heartbeat", {}), {ANON: 401, SELF: 200, OTHER: 403, OPERATOR: 200, USER: 403}),
    "set status": (("PUT", "/api/agents/a1/status", {"status": "busy"}), {ANON: 401, SELF: 200, OTHER: 403, OPERATOR: 200, USER: 403}),
    "discover": (("POST", "/api/agents/discover", {}), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "list agents": (("GET", "/api/agents", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "agent detail": (("GET", "/api/agents/a1", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "agent assignments": (("GET", "/api/agents/a1/assignments", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "drain": (("POST", "/api/agents/a1/drain", None), {ANON: 401, SELF: 403, OTHER: 403, OPERATOR: 200, USER: 403}),
    "deregister": (("DELETE", "/api/agents/a1", None), {ANON: 401, SELF: 200, OTHER: 403, OPERATOR: 200, USER: 403}),
    "create profile": (("POST", "/api/profiles", {"profile_id": "p-new"}), {ANON: 401, SELF: 403, OTHER: 403, OPERATOR: 201, USER: 403}),
    "list profiles": (("GET", "/api/profiles", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "profile detail": (("GET", "/api/profiles/p1", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "profile lookup": (("GET", "/api/profiles/p1/assignment", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "take for a1": (
        ("POST", "/api/assignments", {"profile_id": "p2", "agent_id": "a1"}),
        {ANON: 401, SELF: 201, OTHER: 403, OPERATOR: 201, USER: 403},
    ),
    "list assignments": (("GET", "/api/assignments", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "assignment detail": (("GET", "/api/assignments/{held}", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "update held assignment": (
        ("PATCH", "/api/assignments/{held}", {"status": "idle"}),
        {ANON: 401, SELF: 200, OTHER: 403, OPERATOR: 200, USER: 403},
    ),
    "release held assignment": (("DELETE", "/api/assignments/{held}", None), {ANON: 401, SELF: 200, OTHER: 403, OPERATOR: 200, USER: 403}),
    "metrics": (("GET", "/api/assignments/metrics", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    "events": (("GET", "/api/events", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200}),
    **{
        f"analytics {name}": (("GET", f"/api/analytics/{name}", None), {ANON: 401, SELF: 200, OTHER: 200, OPERATOR: 200, USER: 200})
        for name in ("utilization", "contention", "agents", "tasks")
    },
}

CASES = [(name, caller) for name in MATRIX for caller in (ANON, SELF, OTHER, OPERATOR, USER)]

_CODES = {401: "not_authenticated", 403: "forbidden"}


@pytest.mark.parametrize(("case", "caller"), CASES, ids=[f"{c}-{who}" for c, who in CASES])
def test_permission_matrix(api, make_agent, make_profile, operator_token, user_token, case, caller):
    _, self_token = make_agent("a1")
    _, other_token = make_agent("a2")
    make_profile("p1")
    make_profile("p2")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    tokens = {ANON: None, SELF: self_token, OTHER: other_token, OPERATOR: operator_token, USER: user_token}
    (method, path, body), expected = MATRIX[case]
    response = api.request(method, path.replace("{held}", str(held.assignment_id)), body, token=tokens[caller])
    assert response.status_code == expected[caller], response.content[:400]
    if expected[caller] in _CODES:
        assert response.json()["error"]["code"] == _CODES[expected[caller]]


def test_operator_release_of_a_live_agents_assignment_asks_it_to_release(api, make_agent, make_profile, operator_token):
    make_agent("a1")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    response = api.delete(f"/api/assignments/{held.assignment_id}", token=operator_token)
    assert response.status_code == 200
    assert response.json()["status"] == "releasing"


def test_staff_user_is_an_operator(api, staff_token, db):
    assert api.post("/api/pools", {"name": "staff-pool"}, token=staff_token).status_code == 201


def test_deregistered_agents_token_stops_working(api, make_agent):
    _, token = make_agent("a1")
    assert api.delete("/api/agents/a1", token=token).status_code == 200
    response = api.get("/api/agents", token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_session_writes_need_csrf(db, operator_token):
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.get(username="olga"))
    response = client.post("/api/pools", {"name": "x-pool"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "CSRF" in response.json()["error"]["message"]
    # Reads with the session work without a token.
    assert client.get("/api/pools").status_code == 200
