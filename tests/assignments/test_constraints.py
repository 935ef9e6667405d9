"""The database itself holds invariant 1, even when the services are bypassed."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from assignments.models import Assignment
from tests.factories import AgentFactory, PoolFactory, ProfileFactory

pytestmark = pytest.mark.django_db


def _row(profile, agent, status, token):
    # A `pending` holder is the pool's session waiting for an agent (no agent): a pending row WITH
    # an agent is a queued request (assignments/waits.py), which does not hold the profile.
    return Assignment(profile=profile, pool=agent.pool, agent=None if status == "pending" else agent, status=status,
                      fencing_token=token, released_at=None if status in Assignment.LIVE_STATUSES else timezone.now())


def _queued(profile, agent):
    return Assignment(profile=profile, pool=agent.pool, agent=agent, status="pending", fencing_token=1,
                      wait_until=timezone.now() + timedelta(seconds=60))


@pytest.mark.parametrize("first", ["pending", "active", "idle", "releasing"])
@pytest.mark.parametrize("second", ["pending", "active", "idle", "releasing"])
def test_database_refuses_second_live_assignment_for_a_profile(first, second):
    pool = PoolFactory()
    agent_a, agent_b = AgentFactory(pool=pool), AgentFactory(pool=pool)
    profile = ProfileFactory()
    _row(profile, agent_a, first, 1).save()
    with pytest.raises(IntegrityError), transaction.atomic():
        _row(profile, agent_b, second, 2).save()
    assert Assignment.objects.filter(profile=profile).count() == 1


def test_ended_assignments_do_not_block_a_new_live_one():
    pool = PoolFactory()
    agent = AgentFactory(pool=pool)
    profile = ProfileFactory()
    for token, status in enumerate(["released", "failed", "expired"], start=1):
        _row(profile, agent, status, token).save()
    _row(profile, agent, "active", 4).save()
    assert Assignment.objects.filter(profile=profile).count() == 4


def test_database_refuses_a_held_assignment_without_agent():
    pool = PoolFactory()
    profile = ProfileFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(profile=profile, pool=pool, agent=None, status="active", fencing_token=1)


def test_database_refuses_an_ended_assignment_without_release_time():
    pool = PoolFactory()
    agent = AgentFactory(pool=pool)
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(profile=ProfileFactory(), pool=pool, agent=agent, status="released",
                                  fencing_token=1, released_at=None)


@pytest.mark.parametrize("holder", ["pending", "active", "idle", "releasing"])
def test_queued_requests_wait_behind_the_one_holder_without_breaking_invariant_1(holder):
    pool = PoolFactory()
    agents = [AgentFactory(pool=pool) for _ in range(4)]
    profile = ProfileFactory()
    _row(profile, agents[0], holder, 1).save()
    for agent in agents[1:]:
        _queued(profile, agent).save()
    assert Assignment.objects.queued().filter(profile=profile).count() == 3
    assert Assignment.objects.holding().filter(profile=profile).count() == 1
    # A queued request becoming a second holder is refused by the database itself.
    request = Assignment.objects.queued().filter(profile=profile).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.filter(pk=request.pk).update(status="active")


def test_only_a_queued_request_may_have_no_fencing_token_yet():
    pool = PoolFactory()
    agent = AgentFactory(pool=pool)
    profile = ProfileFactory()
    queued = _queued(profile, agent)
    queued.fencing_token = 0
    queued.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.filter(pk=queued.pk).update(status="active")  # served without a token


def test_database_refuses_a_queued_request_without_deadline():
    pool = PoolFactory()
    agent = AgentFactory(pool=pool)
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(profile=ProfileFactory(), pool=pool, agent=agent, status="pending", fencing_token=1)
