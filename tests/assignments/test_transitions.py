import itertools
from datetime import timedelta

import pytest

from agents.models import AGENT_TRANSITIONS, Agent, agent_can_transition
from assignments.events import recorded_transaction
from assignments.models import (
    ALERT_TRANSITIONS,
    ASSIGNMENT_TRANSITIONS,
    Alert,
    Assignment,
    Event,
    assignment_can_transition,
)
from assignments.services import _transition, assignment_create
from config.errors import InvalidTransition
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

S = Assignment.Status

# Written out independently of the model's table, so that a change to either shows up here.
EXPECTED_ASSIGNMENT = {
    ("pending", "active"), ("pending", "released"), ("pending", "failed"), ("pending", "expired"),
    ("active", "active"),  # moved to another agent by failover or rebalancing
    ("active", "idle"), ("active", "pending"), ("active", "releasing"), ("active", "released"),
    ("active", "failed"), ("active", "expired"),
    ("idle", "active"), ("idle", "pending"), ("idle", "releasing"), ("idle", "released"),
    ("idle", "failed"), ("idle", "expired"),
    ("releasing", "released"), ("releasing", "failed"), ("releasing", "expired"),
}
ALL_ASSIGNMENT_PAIRS = list(itertools.product(S.values, S.values))


@pytest.mark.parametrize(("from_status", "to_status"), ALL_ASSIGNMENT_PAIRS)
def test_assignment_transition_table(from_status, to_status):
    assert assignment_can_transition(from_status, to_status) == ((from_status, to_status) in EXPECTED_ASSIGNMENT)


def test_terminal_statuses_allow_nothing():
    for status in Assignment.TERMINAL_STATUSES:
        assert ASSIGNMENT_TRANSITIONS[status] == frozenset()


@pytest.fixture
def live_assignment(db):
    pool = make_pool()
    make_agent(pool, "a1", capacity=4)
    make_profile("p1")
    return assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))


@pytest.mark.parametrize(("from_status", "to_status"), ALL_ASSIGNMENT_PAIRS)
def test_every_transition_through_the_one_gate(live_assignment, from_status, to_status):
    """The service gate accepts exactly the allowed pairs, and each accepted one leaves one event."""
    released = None if from_status in Assignment.LIVE_STATUSES else live_assignment.assigned_at
    # A pending row with an agent is a queued request, which the database requires to have a deadline.
    wait_until = live_assignment.assigned_at + timedelta(minutes=5)
    Assignment.objects.filter(pk=live_assignment.pk).update(status=from_status, released_at=released, wait_until=wait_until)
    assignment = Assignment.objects.select_related("profile", "pool", "agent").get(pk=live_assignment.pk)
    before = Event.objects.count()
    allowed = (from_status, to_status) in EXPECTED_ASSIGNMENT
    if allowed:
        with recorded_transaction():
            _transition(assignment, to_status, actor=OPERATOR, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED)
        assignment.refresh_from_db()
        assert assignment.status == to_status
        assert (assignment.released_at is not None) == (to_status in Assignment.TERMINAL_STATUSES)
        event = Event.objects.latest("seq")
        assert (event.from_status, event.to_status) == (from_status, to_status)
        assert Event.objects.count() == before + 1
    else:
        with pytest.raises(InvalidTransition):
            with recorded_transaction():
                _transition(assignment, to_status, actor=OPERATOR, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED)
        assert Assignment.objects.get(pk=live_assignment.pk).status == from_status
        assert Event.objects.count() == before


EXPECTED_AGENT = {
    ("active", "busy"), ("active", "draining"), ("active", "stale"), ("active", "inactive"),
    ("busy", "active"), ("busy", "draining"), ("busy", "stale"), ("busy", "inactive"),
    ("draining", "active"),  # by registering again only
    ("draining", "stale"), ("draining", "inactive"),
    ("stale", "active"), ("stale", "draining"), ("stale", "inactive"),
    ("inactive", "active"),  # by registering again only
}
EXPECTED_ALERT = {("open", "acknowledged"), ("open", "resolved"), ("acknowledged", "resolved")}


@pytest.mark.parametrize(("from_status", "to_status"), list(itertools.product(Agent.Status.values, Agent.Status.values)))
def test_agent_transition_table(from_status, to_status):
    assert agent_can_transition(from_status, to_status) == ((from_status, to_status) in EXPECTED_AGENT)
    assert set(AGENT_TRANSITIONS) == set(Agent.Status.values)


@pytest.mark.parametrize(("from_status", "to_status"), list(itertools.product(Alert.Status.values, Alert.Status.values)))
def test_alert_transition_table(from_status, to_status):
    assert ALERT_TRANSITIONS.allows(from_status, to_status) == ((from_status, to_status) in EXPECTED_ALERT)
    assert set(ALERT_TRANSITIONS) == set(Alert.Status.values)
