"""Schemathesis the other way round (issue 10, item 11): requests the schema forbids — an empty
choice filter, a string where a number goes, a value outside an enum — are refused with a
documented 4xx in the error shape, never quietly answered as if the parameter were absent.
Bounded and derandomized, like tests/api/test_schema.py's run of valid requests."""

import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from assignments.services import assignment_create
from tests.api.conftest import SYSTEM

CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_refuses_what_its_schema_forbids(db, make_agent, make_profile, operator_token):
    make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        failures, operations, calls = _run(operator_token)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert operations >= 27
    assert calls >= 5 * operations
    assert not failures, "\n\n".join(failures)


def _run(operator_token):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    headers = {"Authorization": f"Token {operator_token}"}
    failures, operations, calls = [], 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=headers, checks=CHECKS)
            calls.append(1)

        try:
            run()
        except BaseException as exc:  # noqa: BLE001 — schemathesis' FailureGroup is a BaseExceptionGroup
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    return failures, operations, len(calls)
