"""Invariant 1 under real concurrency: separate threads, separate PostgreSQL connections."""

import pytest

from assignments.models import Assignment, Event
from assignments.services import assignment_create
from config.errors import ProfileTaken
from tests.helpers import as_agent, make_agent, make_pool, make_profile

THREADS = 32
PROFILES = 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_32_threads_racing_for_4_profiles_exactly_4_win(run_in_threads):
    pool = make_pool()
    for i in range(THREADS):
        make_agent(pool, f"racer-{i}", capacity=PROFILES)
    for p in range(PROFILES):
        make_profile(f"prof-{p}")

    def take(i):
        return assignment_create(profile_id=f"prof-{i % PROFILES}", agent_id=f"racer-{i}", actor=as_agent(f"racer-{i}"))

    results = run_in_threads(THREADS, take)

    winners = [r for r in results if isinstance(r, Assignment)]
    conflicts = [r for r in results if isinstance(r, ProfileTaken)]
    others = [r for r in results if not isinstance(r, (Assignment, ProfileTaken))]
    assert others == [], f"unexpected outcomes: {others!r}"
    assert len(winners) == PROFILES
    assert len(conflicts) == THREADS - PROFILES
    assert sorted(w.profile.profile_id for w in winners) == [f"prof-{p}" for p in range(PROFILES)]
    # Every loser was told who holds the profile.
    winner_by_profile = {w.profile.profile_id: str(w.assignment_id) for w in winners}
    for c in conflicts:
        assert c.details["holder_assignment_id"] == winner_by_profile[c.details["profile_id"]]
    assert Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES).count() == PROFILES
    assert Event.objects.filter(type="assignment.created").count() == PROFILES
    assert Event.objects.filter(type="assignment.conflict").count() == THREADS - PROFILES


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_agent_racing_for_many_profiles_never_exceeds_its_capacity(run_in_threads):
    pool = make_pool()
    make_agent(pool, "greedy", capacity=3)
    for p in range(16):
        make_profile(f"prof-{p}")

    results = run_in_threads(16, lambda i: assignment_create(profile_id=f"prof-{i}", agent_id="greedy", actor=as_agent("greedy")))

    winners = [r for r in results if isinstance(r, Assignment)]
    assert len(winners) == 3
    assert all(getattr(r, "code", None) == "agent_at_capacity" for r in results if not isinstance(r, Assignment))
    assert Assignment.objects.filter(agent__agent_id="greedy", status__in=Assignment.LIVE_STATUSES).count() == 3
