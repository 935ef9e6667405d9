"""Who may end an assignment, and when it starts (issue 10, item 10)."""

import pytest
from django.utils import timezone

from assignments import services
from assignments.models import Assignment
from assignments.services import assignment_create, assignment_fail, assignment_release
from config.errors import Forbidden
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended():
    pool = make_pool("prod")
    make_agent(pool, "holder")
    make_agent(pool, "stranger")
    make_profile("p1")
    taken = assignment_create(profile_id="p1", agent_id="holder", actor=as_agent("holder"))
    return assignment_release(assignment_id=taken.assignment_id, actor=as_agent("holder"))


def test_a_non_holder_releasing_an_ended_assignment_is_refused(ended):
    with pytest.raises(Forbidden):
        assignment_release(assignment_id=ended.assignment_id, actor=as_agent("stranger"))


def test_a_non_holder_failing_an_ended_assignment_is_refused(ended):
    with pytest.raises(Forbidden):
        assignment_fail(assignment_id=ended.assignment_id, actor=as_agent("stranger"), error="x")
    assert Assignment.objects.get(pk=ended.pk).status == Assignment.Status.RELEASED


def test_the_holder_and_operators_may_still_release_an_ended_one_again(ended):
    assert assignment_release(assignment_id=ended.assignment_id, actor=as_agent("holder")).status == "released"
    assert assignment_release(assignment_id=ended.assignment_id, actor=OPERATOR).status == "released"
    assert assignment_fail(assignment_id=ended.assignment_id, actor=as_agent("holder")).status == "released"


def test_assigned_at_is_read_after_the_profile_row_is_locked(monkeypatch):
    pool = make_pool("prod")
    make_agent(pool, "a1")
    make_profile("p1")
    locked_at = {}

    def timed(real):
        def lock(model, **kwargs):
            row = real(model, **kwargs)
            locked_at[model.__name__] = timezone.now()  # what a lock wait would have cost
            return row
        return lock

    # Either way of taking the row lock (the named statement on PostgreSQL, the ORM's elsewhere).
    monkeypatch.setattr(services, "lock_one", timed(services.lock_one))
    monkeypatch.setattr(services, "lock_one_named", timed(services.lock_one_named))
    taken = assignment_create(profile_id="p1", agent_id="a1", actor=as_agent("a1"))
    assert taken.assigned_at >= locked_at["Profile"]


def test_every_take_path_dates_its_assignment_after_the_profile_lock(monkeypatch):
    from assignments import takes

    pool = make_pool("prod")
    make_agent(pool, "a1", capacity=4)
    make_profile("p1")
    locked_at = {}

    def timed(real):
        def lock(model, **kwargs):
            row = real(model, **kwargs)
            locked_at[model.__name__] = timezone.now()
            return row
        return lock

    # Either way of taking the row lock (the named statement of a take that may wait, the ORM's of a
    # selection).
    monkeypatch.setattr(takes, "lock_one", timed(takes.lock_one))
    monkeypatch.setattr(takes, "lock_one_named", timed(takes.lock_one_named))
    # A take that may wait, of a free profile: granted at once, by `_grant` (not assignment_create).
    result = takes.assignment_take(agent_id="a1", actor=as_agent("a1"), profile_id="p1", wait_seconds=5)
    assert result.assignments[0].status == "active"
    assert result.assignments[0].assigned_at >= locked_at["Profile"]
