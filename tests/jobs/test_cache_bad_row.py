"""One assignment the cache cannot store must not cost the others (issue 10, item 3): the
after-commit refresh and the reconcile job store what they can and drop the bad key, so readers
fall back to the database instead of believing an old entry."""

import pytest
from django.core.cache import cache

from assignments import cache as live_cache
from assignments.jobs import assignments_reconcile_cache
from assignments.selectors import assignment_live_for_profile
from config.actors import Actor

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def unstorable(monkeypatch):
    """Snapshots of prof-0's assignment hold a value no cache can serialise (as deeply nested
    metadata once did: RecursionError while pickling)."""
    def unstorable_for_prof_0(real):
        def make(source):
            item = real(source)
            if item["profile_id"] == "prof-0":
                item["metadata"] = {"unpicklable": lambda: None}
            return item

        return make

    # Both ways a snapshot is made: from a model (reconcile, SQLite) and from the after-commit
    # refresh's named statement (PostgreSQL).
    monkeypatch.setattr(live_cache, "snapshot", unstorable_for_prof_0(live_cache.snapshot))
    monkeypatch.setattr(live_cache, "snapshot_from_row", unstorable_for_prof_0(live_cache.snapshot_from_row))


def test_a_refresh_that_cannot_store_an_entry_drops_it_instead_of_keeping_the_old_one(fleet, unstorable):
    cache.set(live_cache.profile_key("prof-0"), {"a": None})  # cached while the profile was free
    taken = fleet.take(fleet.profiles[0], fleet.a)

    assert cache.get(live_cache.profile_key("prof-0")) is None  # no stale "free" left behind
    held = assignment_live_for_profile("prof-0")
    assert held is not None and held.assignment_id == taken.assignment_id


def test_reconcile_repairs_the_other_entries_when_one_cannot_be_stored(fleet, unstorable):
    fleet.take(fleet.profiles[0], fleet.a)
    other = fleet.take(fleet.profiles[1], fleet.b)
    cache.set(live_cache.profile_key("prof-1"), {"a": None})  # drift: says free while held
    cache.set(live_cache.profile_key("prof-0"), {"a": None})

    counts = assignments_reconcile_cache(actor=Actor.system("reconcile"))

    assert counts["stale"] >= 2
    assert cache.get(live_cache.profile_key("prof-1"))["a"]["assignment_id"] == str(other.assignment_id)
    assert cache.get(live_cache.profile_key("prof-0")) is None
    # And again on the next run: one bad row does not make the job fail from then on.
    assert "stale" in assignments_reconcile_cache(actor=Actor.system("reconcile"))
