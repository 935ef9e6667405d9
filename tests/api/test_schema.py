"""The OpenAPI schema and its docs, and a bounded Schemathesis run against it through the Django
app (in-process WSGI): no 5xx, every status and body as documented."""

from django.core.signals import request_finished, request_started
from django.db import close_old_connections
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from assignments.services import assignment_create
from tests.api.conftest import SYSTEM


def test_schema_lists_every_endpoint_at_its_exact_path(api, db):
    response = api.get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    import yaml

    paths = set(yaml.safe_load(response.content)["paths"])
    assert paths == {
        "/api/pools", "/api/pools/{name}", "/api/agents", "/api/agents/register", "/api/agents/discover",
        "/api/agents/{agent_id}", "/api/agents/{agent_id}/heartbeat", "/api/agents/{agent_id}/status",
        "/api/agents/{agent_id}/drain", "/api/agents/{agent_id}/assignments", "/api/profiles",
        "/api/profiles/{profile_id}", "/api/profiles/{profile_id}/assignment",
            "/api/profiles/{profile_id}/report", "/api/profiles/{profile_id}/clear-quarantine", "/api/assignments",
        "/api/assignments/metrics", "/api/assignments/{assignment_id}", "/api/events",
        "/api/profiles/{profile_id}/release", "/api/alerts", "/api/alerts/{alert_id}/acknowledge",
        "/api/alerts/{alert_id}/resolve",
        # Tasks (DESIGN.md, "Tasks: priority queues and distribution")
        "/api/tasks", "/api/tasks/submit", "/api/tasks/batch", "/api/tasks/status", "/api/tasks/queues",
        "/api/tasks/queues/stats", "/api/tasks/queues/{priority}/clear", "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/start", "/api/tasks/{task_id}/complete", "/api/tasks/{task_id}/fail",
        "/api/tasks/{task_id}/cancel", "/api/agents/{agent_id}/tasks/claim",
    }


def test_take_documents_its_conflict_and_idempotency_answers(api, db):
    import yaml

    schema = yaml.safe_load(api.get("/api/schema").content)
    responses = schema["paths"]["/api/assignments"]["post"]["responses"]
    assert {"201", "400", "401", "403", "404", "409", "413", "415", "422", "429"} <= set(responses)
    assert responses["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_docs_page_uses_no_cdn(api, db):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "https://" not in html


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_api_conforms_to_its_schema(db, make_agent, make_profile, operator_token):
    """Bounded: a dozen generated requests per operation, derandomized, well under a minute.
    (Driven by hand rather than through schemathesis' pytest plugin, which pytest 9 breaks.)"""
    make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    # As Django's test client does: keep the test's connection (and transaction) across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        failures = _run_schemathesis(operator_token)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert not failures, "\n\n".join(failures)


def _run_schemathesis(operator_token) -> list[str]:
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    headers = {"Authorization": f"Token {operator_token}"}
    failures, operations, calls = [], 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            calls.append(response.status_code)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 — collected so that one run reports every operation
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert operations >= 23
    assert len(calls) >= 10 * operations, len(calls)
    # Not only refusals: the run reaches the services too.
    assert sum(200 <= c < 300 for c in calls) >= 50, sorted(set(calls))
    return failures
