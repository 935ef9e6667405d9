"""The seed's metrics and the analytics series, against a scene whose answers are known to the second:
one hour H in which agent-a takes three profiles — one it releases after 10 minutes, one that fails
after 5, one that fails over to agent-b after 20 minutes (agent-a marked stale) and that agent-b
releases 10 minutes later — and agent-b's refused take of that third profile at H+1 min."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.services import agent_mark_stale
from assignments.analytics import Span, holding_spans
from assignments.events import event_record, recorded_transaction
from assignments.jobs import usage_rollup_recent
from assignments.models import Assignment, Event
from assignments.services import assignment_fail, assignment_release
from config.actors import Actor
from config.errors import ProfileTaken
from tests.api.conftest import Api
from tests.factories import PoolFactory
from tests.jobs.conftest import fleet, job_actor, set_scene  # noqa: F401 — fixtures

pytestmark = pytest.mark.django_db

M = timedelta(minutes=1)


@pytest.fixture
def hour():
    return timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


@pytest.fixture
def scene(fleet, hour):  # noqa: F811
    p0, p1, p2 = fleet.profiles
    done = fleet.take(p0, fleet.a)
    assignment_release(assignment_id=done.assignment_id, actor=Actor.for_agent("agent-a"))
    broken = fleet.take(p1, fleet.a)
    assignment_fail(assignment_id=broken.assignment_id, actor=Actor.for_agent("agent-a"), error="crashed")
    moved = fleet.take(p2, fleet.a)
    with pytest.raises(ProfileTaken):
        fleet.take(p2, fleet.b)
    agent_mark_stale(agent_id="agent-a", actor=Actor.system("test"))
    moved.refresh_from_db()
    assert moved.agent_id == fleet.b.pk
    assignment_release(assignment_id=moved.assignment_id, actor=Actor.for_agent("agent-b"))

    set_scene(Assignment, done.pk, assigned_at=hour, released_at=hour + 10 * M)
    set_scene(Assignment, broken.pk, assigned_at=hour, released_at=hour + 5 * M)
    set_scene(Assignment, moved.pk, assigned_at=hour, released_at=hour + 30 * M)
    Event.objects.update(occurred_at=hour + M)
    Event.objects.filter(type="assignment.reassigned").update(occurred_at=hour + 20 * M)
    Event.objects.filter(assignment_id=moved.assignment_id, type="assignment.released").update(occurred_at=hour + 30 * M)
    return fleet


@pytest.fixture
def operator_token(db):
    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    from config.actors import OPERATORS_GROUP

    user = User.objects.create_user("olga", password=None)
    user.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
    return Token.objects.create(user=user).key


def _get(path, token):
    response = Api().get(path, token=token)
    assert response.status_code == 200, response.content[:500]
    return response.json()


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def test_metrics_over_the_hour_use_the_seed_names_and_split_the_failed_over_assignment(scene, hour, operator_token):
    m = _get(f"/api/assignments/metrics?since={_iso(hour)}&until={_iso(hour + 60 * M)}", operator_token)
    assert m["total_assignments"] == 3
    assert m["active_assignments"] == 0
    assert m["successful_assignments"] == 2  # p0 by agent-a, p2 by agent-b
    assert m["failed_assignments"] == 1
    assert m["average_assignment_duration"] == (600 + 300 + 1800) / 3
    assert m["profile_utilization_rates"] == {"prof-2": 0.5, "prof-0": round(600 / 3600, 4), "prof-1": round(300 / 3600, 4)}
    # agent-a: released p0 (good), p1 failed and p2 was moved away from it (bad); agent-b released p2.
    assert m["agent_efficiency_scores"] == {"agent-a": round(1 / 3, 4), "agent-b": 1.0}
    assert m["conflicts"] == 1
    assert m["conflict_frequency"] == 0.25


def test_metrics_over_a_later_window_count_only_the_time_inside_it(scene, hour, operator_token):
    since, until = hour + 15 * M, hour + 60 * M
    m = _get(f"/api/assignments/metrics?since={_iso(since)}&until={_iso(until)}", operator_token)
    assert m["total_assignments"] == 0 and m["successful_assignments"] == 0
    assert m["average_assignment_duration"] is None
    # p2: agent-a held it 15→20, agent-b 20→30: 15 minutes of the 45.
    assert m["profile_utilization_rates"] == {"prof-2": round(900 / 2700, 4)}
    assert m["agent_efficiency_scores"] == {"agent-a": 0.0, "agent-b": 1.0}
    assert m["conflict_frequency"] == 0.0


def test_metrics_of_another_pool_are_empty_and_bad_windows_are_400(scene, hour, operator_token):
    other = PoolFactory(name="elsewhere")
    m = _get(f"/api/assignments/metrics?pool={other.name}&since={_iso(hour)}&until={_iso(hour + 60 * M)}", operator_token)
    assert (m["total_assignments"], m["conflicts"], m["profile_utilization_rates"]) == (0, 0, {})
    api = Api()
    for query in ("since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", "since=yesterday",
                  "since=2030-01-01T00:00:00Z&window=1h", "window=400d"):
        response = api.get(f"/api/assignments/metrics?{query}", token=operator_token)
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "validation_error"


def test_holding_spans_treat_pending_as_waiting_and_a_move_as_the_end_of_a_stretch():
    t0 = timezone.now().replace(microsecond=0)
    changes = [
        (t0, "assignment.created", "a", "", "active", None, None),
        (t0 + 10 * M, "assignment.reassigned", "", "active", "pending", "a", None),
        (t0 + 15 * M, "assignment.reassigned", "c", "pending", "active", None, "c"),
    ]
    spans = holding_spans(agent_id="c", status="released", assigned_at=t0, released_at=t0 + 30 * M, changes=changes,
                          now=t0 + 60 * M)
    assert spans == [Span("a", t0, t0 + 10 * M, "moved"), Span(None, t0 + 10 * M, t0 + 15 * M, "moved"),
                     Span("c", t0 + 15 * M, t0 + 30 * M, "ended")]
    # A request queued for the profile at t0 and served at t0+5: the row counts from its hand-over
    # (assigned_at), the event stamped a moment later; the wait before is the hand-over event's data.
    served_at = t0 + 5 * M
    queued = [(t0, "assignment.created", "w", "", "pending", None, None),
              (served_at + timedelta(milliseconds=20), "assignment.status_changed", "w", "pending", "active", None, None)]
    spans = holding_spans(agent_id="w", status="active", assigned_at=served_at, released_at=None, changes=queued,
                          now=t0 + 20 * M)
    assert spans == [Span("w", served_at, t0 + 20 * M, "open")]
    # Never served (it keeps wait_until): waiting all along, whatever its agent.
    spans = holding_spans(agent_id="w", status="expired", assigned_at=t0, released_at=t0 + M, changes=queued[:1],
                          now=t0 + 20 * M, never_held=True)
    assert spans == [Span(None, t0, t0 + M, "ended")]


def _task_events(fleet_, hour):
    """A task submitted at H, assigned to agent-b at H+10, started at H+11, completed at H+21; a second
    task submitted at H+30 that is still queued."""
    actor = Actor.system("test-tasks")
    pool = fleet_.pool.name
    steps = [
        ("task.submitted", "t1", "", "", "queued", 0), ("task.assigned", "t1", "agent-b", "queued", "assigned", 10),
        ("task.started", "t1", "agent-b", "assigned", "running", 11),
        ("task.completed", "t1", "agent-b", "running", "completed", 21),
        ("task.submitted", "t2", "", "", "queued", 30),
    ]
    for type_, task_id, agent_id, from_status, to_status, minute in steps:
        with recorded_transaction():
            event_record(type_, actor=actor, task_id=task_id, pool_name=pool, agent_id=agent_id,
                         from_status=from_status, to_status=to_status, data={"priority": "normal"})
        Event.objects.filter(type=type_, task_id=task_id).update(occurred_at=hour + minute * M)


@override_settings(TETHER_ROLLUP_HOURS_BACK=4)
def test_analytics_series_and_rankings_read_the_rollups(scene, hour, operator_token, job_actor):  # noqa: F811
    _task_events(scene, hour)
    usage_rollup_recent(actor=job_actor)
    window = f"since={_iso(hour)}&until={_iso(hour + 60 * M)}"

    util = _get(f"/api/analytics/utilization?bucket=hour&{window}", operator_token)
    assert util["profiles"] == 3 and len(util["series"]) == 1
    point = util["series"][0]
    assert point["start"] == _iso(hour)
    assert point["busy_seconds"] == 600 + 300 + 1800
    assert point["average_held"] == 0.75
    assert point["utilization"] == 0.25
    assert (point["assignments"], point["successes"], point["failures"], point["conflicts"], point["failovers"]) == (3, 2, 1, 1, 1)

    longer = _get(f"/api/analytics/utilization?bucket=hour&since={_iso(hour - 120 * M)}&until={_iso(hour + 120 * M)}",
                  operator_token)
    assert [p["busy_seconds"] for p in longer["series"]] == [0, 0, 2700, 0]

    day = _get(f"/api/analytics/utilization?bucket=day&since={_iso(hour)}&until={_iso(hour + 60 * M)}", operator_token)
    assert len(day["series"]) == 1 and day["series"][0]["busy_seconds"] == 2700
    assert day["series"][0]["start"] == _iso(hour.replace(hour=0))

    contention = _get(f"/api/analytics/contention?{window}", operator_token)["results"]
    assert [(r["profile_id"], r["conflicts"], r["failovers"]) for r in contention] == [("prof-2", 1, 1)]

    agents = {r["agent_id"]: r for r in _get(f"/api/analytics/agents?{window}", operator_token)["results"]}
    a, b = agents["agent-a"], agents["agent-b"]
    assert (a["assignments"], a["busy_seconds"], a["successes"], a["failures"], a["failovers"]) == (3, 2100, 1, 1, 1)
    assert a["efficiency"] == round(1 / 3, 4)
    assert (b["assignments"], b["busy_seconds"], b["efficiency"]) == (1, 600, 1.0)
    assert b["busy_share"] == round(600 / (3600 * 4), 4)
    assert (b["tasks_completed"], b["average_task_seconds"]) == (1, 600)

    tasks = _get(f"/api/analytics/tasks?{window}", operator_token)
    assert tasks["tasks_recorded"] is True
    (t,) = tasks["series"]
    assert (t["enqueued"], t["dequeued"], t["queue_depth"], t["assigned"], t["average_wait_seconds"], t["completed"]) == (
        2, 1, 1, 1, 600, 1)
    later = _get(f"/api/analytics/tasks?since={_iso(hour + 60 * M)}&until={_iso(hour + 120 * M)}", operator_token)
    assert later["series"][0]["queue_depth"] == 1  # carried over from the hours before the window


def test_task_series_is_all_zeros_while_no_task_event_exists(fleet, operator_token):  # noqa: F811 — the fixture
    tasks = _get("/api/analytics/tasks?window=3h", operator_token)
    assert tasks["tasks_recorded"] is False
    assert len(tasks["series"]) in (3, 4)
    assert all(p["queue_depth"] == 0 and p["enqueued"] == 0 for p in tasks["series"])


def test_analytics_refuse_bad_buckets_and_too_long_windows(db, operator_token):
    api = Api()
    for path in ("/api/analytics/utilization?bucket=week", "/api/analytics/utilization?window=40d",
                 "/api/analytics/tasks?bucket=day&window=400d", "/api/analytics/contention?limit=0",
                 "/api/analytics/agents?sort=nope"):
        response = api.get(path, token=operator_token)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == "validation_error"
    assert len(_get("/api/analytics/utilization?bucket=day", operator_token)["series"]) in (30, 31)


@override_settings(TETHER_ROLLUP_HOURS_BACK=4)
def test_the_current_hours_counts_are_live_before_the_next_rollup(scene, hour, operator_token, job_actor):  # noqa: F811
    usage_rollup_recent(actor=job_actor)
    now = timezone.now()
    current = now.replace(minute=0, second=0, microsecond=0)
    window = f"since={_iso(current)}&until={_iso(current + 60 * M)}"
    before = _get(f"/api/analytics/utilization?{window}", operator_token)["series"][0]
    assert (before["assignments"], before["conflicts"]) == (0, 0)
    scene.take(scene.profiles[0], scene.b)  # no rollup run after this
    with pytest.raises(ProfileTaken):
        scene.take(scene.profiles[0], scene.b)
    after = _get(f"/api/analytics/utilization?{window}", operator_token)["series"][0]
    assert (after["assignments"], after["conflicts"]) == (1, 1)
    day = _get(f"/api/analytics/utilization?bucket=day&since={_iso(current)}&until={_iso(current + 60 * M)}",
               operator_token)["series"][-1]
    assert (day["assignments"], day["conflicts"]) == (1, 1)
    usage_rollup_recent(actor=job_actor)  # rolled up: the same numbers, not twice
    again = _get(f"/api/analytics/utilization?{window}", operator_token)["series"][0]
    assert (again["assignments"], again["conflicts"]) == (1, 1)
