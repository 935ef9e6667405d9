"""A pool's idle timeout means what it says (issue 10, item 12; DESIGN.md "Background jobs"): an
assignment with no activity for its pool's assignment_idle_timeout_seconds is reaped by the next
sweep, whatever TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS says, and a heartbeat that no longer lists it
is no activity."""

from django.test import override_settings

from agents.services import agent_heartbeat
from assignments.jobs import assignments_expire_idle
from assignments.models import Assignment
from config.actors import Actor
from tests.jobs.conftest import ago, refresh, set_scene

S = Assignment.Status


def _short_timeout(fleet, seconds=8):
    fleet.pool.assignment_idle_timeout_seconds = seconds
    fleet.pool.save(update_fields=["assignment_idle_timeout_seconds"])


@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=300)
def test_an_active_assignment_past_its_pools_short_timeout_is_reaped_by_the_next_sweep(fleet, job_actor):
    _short_timeout(fleet)
    forgotten = fleet.take(fleet.profiles[0], fleet.a)
    recent = fleet.take(fleet.profiles[1], fleet.a)
    set_scene(Assignment, forgotten.pk, last_activity=ago(9))
    set_scene(Assignment, recent.pk, last_activity=ago(7))

    assert assignments_expire_idle(actor=job_actor)["expired"] == 1
    assert refresh(forgotten).status == S.EXPIRED
    assert refresh(recent).status == S.ACTIVE


@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=300)
def test_a_heartbeat_that_no_longer_lists_an_assignment_does_not_keep_it_alive(fleet, job_actor):
    _short_timeout(fleet)
    dropped = fleet.take(fleet.profiles[0], fleet.a)
    kept = fleet.take(fleet.profiles[1], fleet.a)
    set_scene(Assignment, dropped.pk, last_activity=ago(9))
    set_scene(Assignment, kept.pk, last_activity=ago(9))

    agent_heartbeat(agent_id=fleet.a.agent_id, actor=Actor.for_agent(fleet.a.agent_id), reported=[kept.assignment_id])
    assignments_expire_idle(actor=job_actor)

    assert refresh(dropped).status == S.EXPIRED
    assert refresh(kept).status == S.ACTIVE


@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=30)
def test_being_idled_by_the_sweep_is_not_activity(fleet, job_actor):
    # The pool's timeout is 60 s: idled at 31 s of silence, reaped at 61 s — not at 31 + 60.
    quiet = fleet.take(fleet.profiles[0], fleet.a)
    set_scene(Assignment, quiet.pk, last_activity=ago(31))
    assert assignments_expire_idle(actor=job_actor)["idled"] == 1
    assert refresh(quiet).status == S.IDLE

    set_scene(Assignment, quiet.pk, last_activity=ago(61))  # what 30 more seconds of silence leaves
    assert assignments_expire_idle(actor=job_actor)["expired"] == 1
    assert refresh(quiet).status == S.EXPIRED


@override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=30)
def test_idling_keeps_the_last_activity(fleet, job_actor):
    quiet = fleet.take(fleet.profiles[0], fleet.a)
    set_scene(Assignment, quiet.pk, last_activity=ago(31))
    before = refresh(quiet).last_activity
    assignments_expire_idle(actor=job_actor)
    assert refresh(quiet).last_activity == before
