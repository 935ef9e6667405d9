"""Hourly usage rollups, and the archive that keeps old history out of the live log."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from assignments.jobs import events_archive_old, usage_rollup_recent
from assignments.models import Assignment, Event, EventArchive, UsageRollup
from assignments.services import assignment_fail, assignment_release
from config.actors import Actor
from config.errors import ProfileTaken
from tests.jobs.conftest import set_scene


def _rows():
    return {
        (r.scope, r.key): (r.assignments, round(r.busy_seconds), r.conflicts, r.failures, r.expirations)
        for r in UsageRollup.objects.all()
    }


@override_settings(TETHER_ROLLUP_HOURS_BACK=1)
def test_rollup_counts_assignments_busy_seconds_conflicts_and_failures_per_profile_agent_and_pool(fleet, job_actor):
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    done = fleet.take(fleet.profiles[0], fleet.a)
    assignment_release(assignment_id=done.assignment_id, actor=Actor.for_agent("agent-a"))
    # It was held for exactly ten minutes within this hour.
    set_scene(Assignment, done.pk, assigned_at=hour + timedelta(minutes=1), released_at=hour + timedelta(minutes=11))
    broken = fleet.take(fleet.profiles[1], fleet.a)
    assignment_fail(assignment_id=broken.assignment_id, actor=Actor.for_agent("agent-a"), error="browser crashed")
    set_scene(Assignment, broken.pk, assigned_at=hour, released_at=hour)
    fleet.take(fleet.profiles[2], fleet.a)
    set_scene(Assignment, Assignment.objects.get(profile=fleet.profiles[2]).pk, assigned_at=hour)
    with pytest.raises(ProfileTaken):
        fleet.take(fleet.profiles[2], fleet.b)
    Event.objects.update(occurred_at=hour + timedelta(minutes=1))
    later = hour + timedelta(minutes=30)

    result = usage_rollup_recent(actor=job_actor, now=later)
    rows = _rows()
    assert result == {"hours": 2, "rows": 6}, rows
    pool = fleet.pool.name
    # (assignments, busy seconds, conflicts, failures, expirations)
    assert rows[("profile", "prof-0")] == (1, 600, 0, 0, 0)
    assert rows[("profile", "prof-1")] == (1, 0, 0, 1, 0)
    assert rows[("profile", "prof-2")] == (1, 1800, 1, 0, 0)
    assert rows[("agent", "agent-a")] == (3, 2400, 0, 1, 0)
    assert rows[("agent", "agent-b")] == (0, 0, 1, 0, 0)  # its refused take
    assert rows[("pool", pool)] == (3, 2400, 1, 1, 0)
    assert all(r.hour == hour for r in UsageRollup.objects.all())

    assert usage_rollup_recent(actor=job_actor, now=later) == {"hours": 2, "rows": 6}
    assert _rows() == rows


@override_settings(TETHER_EVENT_RETENTION_DAYS=7)
def test_events_older_than_the_retention_move_to_the_archive_with_their_seq(fleet, job_actor):
    fleet.take(fleet.profiles[0], fleet.a)
    fleet.take(fleet.profiles[1], fleet.a)
    seqs = list(Event.objects.order_by("seq").values_list("seq", flat=True))
    old, recent = seqs[:-1], seqs[-1:]
    Event.objects.filter(seq__in=old).update(occurred_at=timezone.now() - timedelta(days=8))
    before = {e.seq: (e.type, e.profile_id, e.data) for e in Event.objects.filter(seq__in=old)}

    assert events_archive_old(actor=job_actor, limit=2) == {"archived": len(old)}
    assert list(Event.objects.values_list("seq", flat=True)) == recent
    assert {e.seq: (e.type, e.profile_id, e.data) for e in EventArchive.objects.all()} == before

    assert events_archive_old(actor=job_actor) == {"archived": 0}
    assert EventArchive.objects.count() == len(old)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(TETHER_EVENT_RETENTION_DAYS=7)
def test_concurrent_archive_runs_move_each_event_once(fleet, job_actor, run_in_threads):
    for profile in fleet.profiles:
        fleet.take(profile, fleet.a)
    Event.objects.update(occurred_at=timezone.now() - timedelta(days=8))
    total = Event.objects.count()

    results = run_in_threads(4, lambda i: events_archive_old(actor=job_actor, limit=1))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["archived"] for r in results) == total
    assert EventArchive.objects.count() == total
    assert Event.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_rollups_leave_one_row_per_key_and_hour(fleet, job_actor, run_in_threads):
    fleet.take(fleet.profiles[0], fleet.a)
    results = run_in_threads(4, lambda i: usage_rollup_recent(actor=job_actor))
    assert not [r for r in results if isinstance(r, BaseException)], results
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    assert sorted(UsageRollup.objects.filter(hour=hour).values_list("scope", "key")) == [
        ("agent", "agent-a"), ("pool", fleet.pool.name), ("profile", "prof-0")]


@override_settings(TETHER_ROLLUP_HOURS_BACK=0)
def test_rollup_splits_busy_time_between_the_agents_a_failover_moved_it_to_and_not_while_it_waited(fleet, job_actor):
    from agents.jobs import agents_mark_overdue_stale
    from agents.models import Agent
    from pools.jobs import pools_rebalance_all
    from tests.factories import AgentFactory
    from tests.jobs.conftest import ago

    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    held = fleet.take(fleet.profiles[0], fleet.a)
    Agent.objects.filter(pk=fleet.a.pk).update(last_heartbeat=ago(60))
    Agent.objects.filter(pk=fleet.b.pk).update(last_heartbeat=ago(50))
    agents_mark_overdue_stale(actor=job_actor)  # a (the older) → b, then b → waiting
    c = AgentFactory(pool=fleet.pool, agent_id="agent-c")
    pools_rebalance_all(actor=job_actor)  # waiting → c
    assignment_release(assignment_id=held.assignment_id, actor=Actor.for_agent("agent-c"))
    moves = list(Event.objects.filter(type="assignment.reassigned", assignment_id=held.assignment_id).order_by("seq"))
    assert [(m.data["from_agent_id"], m.data["to_agent_id"]) for m in moves] == [
        ("agent-a", "agent-b"), ("agent-b", None), (None, "agent-c")]
    for event, minute in zip(moves, (10, 15, 20)):
        Event.objects.filter(seq=event.seq).update(occurred_at=hour + timedelta(minutes=minute))
    set_scene(Assignment, held.pk, assigned_at=hour, released_at=hour + timedelta(minutes=30))

    usage_rollup_recent(actor=job_actor, now=hour + timedelta(minutes=40))

    busy = {(r.scope, r.key): round(r.busy_seconds) for r in UsageRollup.objects.filter(hour=hour)}
    assert busy[("agent", "agent-a")] == 600
    assert busy[("agent", "agent-b")] == 300
    assert busy[("agent", c.agent_id)] == 600
    assert busy[("profile", "prof-0")] == 1500  # the five minutes it waited count for nobody
    assert busy[("pool", fleet.pool.name)] == 1500
