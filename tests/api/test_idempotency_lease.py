"""An Idempotency-Key claim is a lease (issue 10, item 4): a process that dies between claiming a
key and storing its answer leaves the key stuck for at most the lease, not for the key's whole TTL."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from assignments import takes
from assignments.models import Assignment, IdempotencyKey
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def _later(monkeypatch, seconds):
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(seconds=seconds))


def test_an_abandoned_claim_is_given_up_after_its_lease(api, make_agent, make_profile, monkeypatch):
    _, token = make_agent("a1")
    make_profile("p1")
    headers = {"Idempotency-Key": "take-1"}

    def die(**kwargs):
        raise KeyboardInterrupt  # the process is killed mid-request: the decorator stores nothing

    with monkeypatch.context() as dying:
        dying.setattr(takes, "assignment_take", die)
        with pytest.raises(KeyboardInterrupt):
            api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers=headers)
    claim = IdempotencyKey.objects.get(key="take-1")
    assert claim.status_code is None
    assert claim.expires_at <= timezone.now() + timedelta(seconds=settings.TETHER_IDEMPOTENCY_LEASE_SECONDS)
    assert settings.TETHER_IDEMPOTENCY_LEASE_SECONDS <= 60

    # While the lease runs, a retry is told to wait...
    assert_error(api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers=headers), 409,
                 "idempotency_in_progress")
    # ...and after it, the retry runs anew, and its answer is kept for the key's full TTL.
    _later(monkeypatch, settings.TETHER_IDEMPOTENCY_LEASE_SECONDS + 1)
    retry = api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers=headers)
    assert retry.status_code == 201, retry.content
    assert Assignment.objects.filter(profile__profile_id="p1").count() == 1
    stored = IdempotencyKey.objects.get(key="take-1")
    assert stored.status_code == 201
    assert stored.expires_at > timezone.now() + timedelta(seconds=settings.TETHER_IDEMPOTENCY_TTL_SECONDS - 60)


def test_a_finished_answer_is_replayed_long_after_the_lease(api, make_agent, make_profile, monkeypatch):
    _, token = make_agent("a1")
    make_profile("p1")
    headers = {"Idempotency-Key": "take-2"}
    first = api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers=headers)
    assert first.status_code == 201
    _later(monkeypatch, 3600)
    again = api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers=headers)
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["assignment_id"] == first.json()["assignment_id"]
