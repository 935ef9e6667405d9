"""Huge or too many headers, and bad Host headers (issue 10, item 11)."""

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _error(response, status, code):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"code", "message", "details"} and body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize("path", ["/api/pools", "/health", "/accounts/login/"])
def test_too_many_headers_is_a_json_400(path, settings):
    headers = {f"HTTP_X_FILLER_{i}": "x" for i in range(settings.TETHER_MAX_REQUEST_HEADERS + 1)}
    error = _error(Client().get(path, **headers), 400, "too_many_headers")
    assert error["details"]["limit"] == settings.TETHER_MAX_REQUEST_HEADERS


@pytest.mark.parametrize("path", ["/api/pools", "/health"])
def test_huge_headers_are_a_json_431(path):
    _error(Client().get(path, HTTP_X_HUGE="a" * 60_000), 431, "request_header_fields_too_large")


def test_ordinary_requests_pass(client):
    assert client.get("/health", HTTP_X_ONE="1", HTTP_X_TWO="2").status_code == 200


def test_a_bad_host_header_is_a_400_and_one_warning_line(caplog):
    with caplog.at_level(logging.INFO):
        response = Client().get("/api/pools", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    records = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert records and all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
