"""OPTIONS and HEAD on every endpoint answer without a server error, in the API's shape."""

import pytest

from assignments.services import assignment_create
from tests.api.conftest import SYSTEM

PATHS = [
    "/api/pools", "/api/pools/k8s-prod", "/api/agents", "/api/agents/register", "/api/agents/discover", "/api/agents/a1",
    "/api/agents/a1/heartbeat", "/api/agents/a1/status", "/api/agents/a1/drain", "/api/agents/a1/assignments",
    "/api/profiles", "/api/profiles/p1", "/api/profiles/p1/assignment", "/api/assignments", "/api/assignments/metrics",
    "/api/assignments/{held}", "/api/events",
]


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD"])
def test_options_and_head_never_fail(api, make_agent, make_profile, operator_token, method):
    _, token = make_agent("a1")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    for path in PATHS:
        for credential in (None, token, operator_token):
            response = api.request(method, path.replace("{held}", str(held.assignment_id)), token=credential)
            assert response.status_code < 500, (method, path, response.status_code, response.content[:300])
            if credential is None and method == "OPTIONS":
                assert response.status_code in (200, 401), (path, response.status_code)


def test_reserved_agent_ids_cannot_be_registered(api, pool, enrollment_token):
    for reserved in ("register", "discover"):
        response = api.post("/api/agents/register", {"agent_id": reserved, "pool": pool.name},
                            headers={"X-Enrollment-Token": enrollment_token})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"
