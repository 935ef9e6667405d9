"""Invariant 3: every change is recorded as an event in its own transaction; failures leave none."""

from unittest import mock

import pytest
from django.db import transaction

from agents.models import Agent
from agents.services import agent_heartbeat
from assignments.events import event_record, recorded_transaction
from assignments.models import Assignment, Event, Profile
from assignments.services import (
    assignment_create,
    assignment_expire,
    assignment_fail,
    assignment_release,
    assignment_update,
    profile_update,
)
from config import errors
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene():
    pool = make_pool()
    make_agent(pool, "a1", capacity=2)
    make_agent(pool, "a2", capacity=1)
    make_profile("p1")
    make_profile("p2")
    return pool


def _new_events(since):
    return list(Event.objects.filter(seq__gt=since).order_by("seq").values_list("type", "from_status", "to_status"))


def _last_seq():
    return Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def test_take_release_update_expire_fail_each_leave_exactly_their_events(scene):
    mark = _last_seq()
    a = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"), workflow_id="wf-1")
    assert _new_events(mark) == [("assignment.created", "", "active")]

    mark = _last_seq()
    assignment_update(assignment_id=a.assignment_id, actor=as_agent("a1"), status="idle")
    assert _new_events(mark) == [("assignment.status_changed", "active", "idle")]

    mark = _last_seq()
    assignment_update(assignment_id=a.assignment_id, actor=as_agent("a1"), metadata={"step": 2})
    assert _new_events(mark) == [("assignment.updated", "", "")]

    mark = _last_seq()
    assignment_release(assignment_id=a.assignment_id, actor=as_agent("a1"))
    assert _new_events(mark) == [("assignment.released", "idle", "released")]

    mark = _last_seq()
    assignment_release(assignment_id=a.assignment_id, actor=as_agent("a1"))  # again: no error, no event
    assert _new_events(mark) == []

    b = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    mark = _last_seq()
    assignment_expire(assignment_id=b.assignment_id, actor=OPERATOR)
    assert _new_events(mark) == [("assignment.expired", "active", "expired")]

    c = assignment_create(profile_id="p2", agent_id="a1", actor=as_agent("a1"))
    mark = _last_seq()
    assignment_fail(assignment_id=c.assignment_id, actor=as_agent("a1"), error="browser crashed")
    assert _new_events(mark) == [("assignment.status_changed", "active", "failed")]


def test_event_names_its_assignment_profile_agent_pool_and_actor(scene):
    a = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    e = Event.objects.get(type="assignment.created")
    assert (e.assignment_id, e.profile_id, e.agent_id, e.pool, e.actor) == (a.assignment_id, "p1", "a1", scene.name, "agent:a1")
    assert e.data["fencing_token"] == a.fencing_token


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: assignment_create(profile_id="nope", agent_id="a1", actor=as_agent("a1")), errors.NotFound),
        (lambda: assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a2")), errors.Forbidden),
        (lambda: assignment_create(profile_id="p1", agent_id="ghost", actor=OPERATOR), errors.NotFound),
        (lambda: assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"), metadata={"x": "y" * 20000}),
         errors.ValidationFailed),
        (lambda: assignment_create(profile_id="p\x001", agent_id="a1", actor=as_agent("a1")), errors.ValidationFailed),
        (lambda: agent_heartbeat(agent_id="a1", actor=as_agent("a1"), load_metrics={"cpu": -5}), errors.ValidationFailed),
        (lambda: agent_heartbeat(agent_id="a1", actor=as_agent("a2")), errors.Forbidden),
    ],
)
def test_refused_calls_leave_no_event_and_no_change(scene, call, error):
    mark = _last_seq()
    before = list(Assignment.objects.values_list("pk", "status"))
    with pytest.raises(error):
        call()
    assert _new_events(mark) == []
    assert list(Assignment.objects.values_list("pk", "status")) == before


def test_refused_take_of_a_disabled_profile_leaves_nothing(scene):
    profile_update(profile_id="p2", actor=OPERATOR, enabled=False)
    mark = _last_seq()
    with pytest.raises(errors.ProfileDisabled):
        assignment_create(profile_id="p2", agent_id="a1", actor=as_agent("a1"))
    assert _new_events(mark) == [] and not Assignment.objects.exists()


def test_refused_take_over_capacity_leaves_nothing_but_the_first(scene):
    assignment_create(profile_id="p1", agent_id="a2", actor=as_agent("a2"))
    mark = _last_seq()
    with pytest.raises(errors.AgentAtCapacity):
        assignment_create(profile_id="p2", agent_id="a2", actor=as_agent("a2"))
    assert _new_events(mark) == [] and Assignment.objects.count() == 1


def test_conflict_is_refused_and_recorded_as_its_own_event(scene):
    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    mark = _last_seq()
    with pytest.raises(errors.ProfileTaken) as exc:
        assignment_create(profile_id="p1", agent_id="a2", actor=as_agent("a2"))
    assert exc.value.details["holder_agent_id"] == "a1"
    assert exc.value.details["holder_assignment_id"] == str(held.assignment_id)
    events = list(Event.objects.filter(seq__gt=mark))
    assert [(e.type, e.agent_id, e.profile_id) for e in events] == [("assignment.conflict", "a2", "p1")]
    assert events[0].data["holder_agent_id"] == "a1"
    assert Assignment.objects.count() == 1


def test_a_failure_after_the_change_rolls_back_change_and_event_together(scene):
    mark = _last_seq()
    with mock.patch("assignments.services.event_record", side_effect=RuntimeError("boom")):
        with pytest.raises(RuntimeError):
            assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    assert not Assignment.objects.exists()
    assert _new_events(mark) == []
    assert Agent.objects.get(agent_id="a1").status == "active"


def test_events_are_published_only_after_commit(scene, django_capture_on_commit_callbacks):
    with mock.patch("dashboard.publish.publish_events") as publish:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
        publish.assert_not_called()
        for callback in callbacks:
            callback()
    payloads = publish.call_args.args[0]
    assert [p["type"] for p in payloads] == ["assignment.created"]
    assert payloads[0]["profile_id"] == "p1" and payloads[0]["agent_id"] == "a1"
    assert set(payloads[0]) == {"seq", "type", "occurred_at", "actor", "assignment_id", "profile_id", "agent_id",
                                "pool", "from_status", "to_status", "data"}


def test_rolled_back_transaction_publishes_nothing(scene, django_capture_on_commit_callbacks):
    with mock.patch("dashboard.publish.publish_events") as publish:
        with django_capture_on_commit_callbacks(execute=True):
            try:
                with transaction.atomic():
                    assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
                    raise RuntimeError("caller fails after the service")
            except RuntimeError:
                pass
    publish.assert_not_called()
    assert not Assignment.objects.exists()


def test_nested_block_that_rolls_back_drops_only_its_own_events(scene):
    mark = _last_seq()
    with recorded_transaction():
        event_record("test.kept", actor=OPERATOR)
        try:
            with recorded_transaction():
                event_record("test.dropped", actor=OPERATOR)
                raise ValueError
        except ValueError:
            pass
    assert [t for t, _, _ in _new_events(mark)] == ["test.kept"]


def test_recording_outside_a_recorded_transaction_is_a_programming_error():
    with pytest.raises(RuntimeError):
        event_record("test.orphan", actor=OPERATOR)


def test_events_cannot_be_updated_or_deleted(scene):
    event = Event.objects.first()
    event.type = "tampered"
    with pytest.raises(RuntimeError):
        event.save()
    with pytest.raises(RuntimeError):
        event.delete()


def test_a_take_that_slips_past_the_holder_check_is_still_refused_as_a_conflict(scene):
    """Defence in depth: if the service's own check missed the holder, the partial unique
    constraint refuses the insert, the take rolls back whole, and the caller gets a conflict."""
    assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    mark = _last_seq()
    # The check's statement, made blind to the holder (the fencing-token bump it carries still runs).
    blind = "SELECT 0, NULL, NULL, NULL WHERE %s IS NOT NULL AND %s IS NOT NULL"
    with mock.patch("assignments.services.TAKE_CHECK_SQL", blind):
        with pytest.raises(errors.ProfileTaken):
            assignment_create(profile_id="p1", agent_id="a2", actor=as_agent("a2"))
    assert Assignment.objects.filter(profile__profile_id="p1").count() == 1
    assert [t for t, _, _ in _new_events(mark)] == ["assignment.conflict"]
    assert Profile.objects.get(profile_id="p1").fencing_token == 1  # the bump rolled back too


def test_an_agent_confirming_an_operators_release_keeps_the_force_released_reason(scene):
    from django.contrib.auth.models import User

    from config.actors import Actor

    held = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    assignment_release(assignment_id=held.assignment_id, actor=Actor.for_user(User.objects.create_user("op", is_staff=True)))
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("a1"))
    held.refresh_from_db()
    assert held.status == Assignment.Status.RELEASED
    assert held.release_reason == Assignment.ReleaseReason.FORCE_RELEASED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_change_that_committed_is_not_an_error_when_its_event_numbers_cannot_be_read(monkeypatch, caplog):
    """The numbers are read back after COMMIT; if that read fails (the connection died just after
    the commit), the change stands, the caller gets no error, and the consumers are skipped."""
    import assignments.events

    def broken(events):
        raise RuntimeError("connection lost after COMMIT")

    consumed = []
    monkeypatch.setattr(assignments.events, "_numbered", broken)
    monkeypatch.setattr(assignments.events, "events_committed", consumed.append)
    with recorded_transaction():
        event_record(Event.Type.PROFILE_UPDATED, actor="test", profile_id="after-commit")
    assert Event.objects.filter(profile_id="after-commit", seq__gt=0).count() == 1
    assert consumed == [] and "could not read the numbers" in caplog.text
