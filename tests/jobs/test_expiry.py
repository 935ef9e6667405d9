"""The idle and expiry sweep: active → idle → expired, releasing → released, once each."""

import pytest
from django.test import override_settings

from assignments.jobs import assignments_expire_idle
from assignments.models import Assignment, Event
from assignments.services import assignment_release
from config.actors import Actor
from tests.jobs.conftest import ago, refresh, set_scene

S = Assignment.Status


@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=30)
def test_active_assignment_without_activity_becomes_idle_and_twice_changes_nothing(fleet, job_actor):
    quiet = fleet.take(fleet.profiles[0], fleet.a)
    busy = fleet.take(fleet.profiles[1], fleet.a)
    set_scene(Assignment, quiet.pk, last_activity=ago(31))

    assert assignments_expire_idle(actor=job_actor) == {"idled": 1, "expired": 0, "released": 0}
    assert refresh(quiet).status == S.IDLE
    assert refresh(busy).status == S.ACTIVE
    event = Event.objects.filter(assignment_id=quiet.assignment_id).last()
    assert (event.type, event.from_status, event.to_status, event.actor) == (
        "assignment.status_changed", "active", "idle", "system:job-under-test")

    events = Event.objects.count()
    assert assignments_expire_idle(actor=job_actor) == {"idled": 0, "expired": 0, "released": 0}
    assert Event.objects.count() == events


def test_idle_assignment_past_its_pools_idle_timeout_expires(fleet, job_actor):
    old = fleet.take(fleet.profiles[0], fleet.a)
    young = fleet.take(fleet.profiles[1], fleet.a)
    for a in (old, young):
        set_scene(Assignment, a.pk, status=S.IDLE)
    set_scene(Assignment, old.pk, last_activity=ago(61))  # the pool's timeout is 60 s
    set_scene(Assignment, young.pk, last_activity=ago(50))

    assert assignments_expire_idle(actor=job_actor)["expired"] == 1
    old = refresh(old)
    assert (old.status, old.release_reason) == (S.EXPIRED, Assignment.ReleaseReason.EXPIRED)
    assert old.released_at is not None
    assert refresh(young).status == S.IDLE
    assert Event.objects.filter(type="assignment.expired", assignment_id=old.assignment_id).count() == 1
    assert assignments_expire_idle(actor=job_actor)["expired"] == 0


@override_settings(TETHER_RELEASE_GRACE_SECONDS=10)
def test_releasing_assignment_past_the_grace_period_is_released(fleet, job_actor, django_user_model):
    operator = django_user_model.objects.create_user("op", is_staff=True)
    late = fleet.take(fleet.profiles[0], fleet.a)
    recent = fleet.take(fleet.profiles[1], fleet.a)
    for a in (late, recent):
        assert assignment_release(assignment_id=a.assignment_id, actor=Actor.for_user(operator)).status == S.RELEASING
    set_scene(Assignment, late.pk, last_activity=ago(11))

    assert assignments_expire_idle(actor=job_actor)["released"] == 1
    late = refresh(late)
    assert (late.status, late.release_reason) == (S.RELEASED, Assignment.ReleaseReason.FORCE_RELEASED)
    assert refresh(recent).status == S.RELEASING


@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=30)
def test_sweep_handles_at_most_limit_rows_per_run(fleet, job_actor):
    taken = [fleet.take(p, fleet.a) for p in fleet.profiles]
    for a in taken:
        set_scene(Assignment, a.pk, last_activity=ago(40))
    assert assignments_expire_idle(actor=job_actor, limit=2)["idled"] == 2
    assert assignments_expire_idle(actor=job_actor, limit=2)["idled"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=30)
def test_concurrent_sweeps_idle_each_assignment_exactly_once(fleet, job_actor, run_in_threads):
    from tests.factories import ProfileFactory

    profiles = fleet.profiles + [ProfileFactory(pool=fleet.pool) for _ in range(5)]
    taken = [fleet.take(p, fleet.a if i % 2 else fleet.b) for i, p in enumerate(profiles)]
    for a in taken:
        set_scene(Assignment, a.pk, last_activity=ago(40))

    results = run_in_threads(4, lambda i: assignments_expire_idle(actor=job_actor))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["idled"] for r in results) == len(taken)
    assert Assignment.objects.filter(status=S.IDLE).count() == len(taken)
    assert Event.objects.filter(type="assignment.status_changed", to_status="idle").count() == len(taken)
