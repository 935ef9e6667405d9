"""Tasks through their services: submit, placement by strategy, priorities and aging, no
head-of-line blocking, the agent's calls with attempt fencing, failover, deadlines, profiles,
queue clear and stats. (Placement after commit is the event consumer's; here it is called directly.)"""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.models import Agent
from agents.services import (
    agent_deregister,
    agent_drain,
    agent_heartbeat,
    agent_mark_stale,
    agent_register,
    agent_set_status,
)
from assignments.models import Assignment, Event
from assignments.services import assignment_create
from config.actors import Actor
from config.errors import Conflict, Forbidden, InvalidTransition, StaleFencingToken, ValidationFailed
from pools.dispatch import task_claim, tasks_dispatch_for_events, tasks_place
from pools.jobs import tasks_expire_overdue, tasks_place_all, tasks_requeue_lost
from pools.models import Task
from pools.queue import (
    queue_clear,
    task_cancel,
    task_complete,
    task_fail,
    task_resubmit,
    task_start,
    task_submit,
    task_submit_batch,
)
from pools.selectors import queue_sizes, queue_stats, task_status
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def _submit(pool="q", **fields):
    return task_submit(actor=OPERATOR, pool=pool, **fields)


def _task(task_id):
    return Task.objects.select_related("agent", "assignment").get(task_id=task_id)


def test_submit_queues_a_task_with_its_event_and_refuses_a_used_id():
    make_pool("q")
    task = _submit(task_id="t1", priority="high", payload={"url": "https://example.com"},
                   requirements={"capabilities": ["chrome", "chrome"], "region": "eu"})
    assert task.status == Task.Status.QUEUED and task.attempt == 1 and task.max_attempts == 3
    assert task.requirements == {"capabilities": ["chrome"], "region": "eu"}
    event = Event.objects.get(type="task.submitted")
    assert (event.task_id, event.pool, event.data["priority"], event.to_status) == ("t1", "q", "high", "queued")
    with pytest.raises(Conflict):
        _submit(task_id="t1")
    assert Task.objects.count() == 1


@pytest.mark.parametrize("fields, field", [
    ({"priority": "asap"}, "priority"),
    ({"payload": ["not", "an", "object"]}, "payload"),
    ({"payload": {"blob": "x" * 20_000}}, "payload"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"task_id": "status"}, "task_id"),
    ({"task_id": "has space"}, "task_id"),
    ({"requirements": {"gpu": True}}, "requirements"),
    ({"requirements": {"profile_requirements": {"tags": ["eu"]}}}, "requirements"),
    ({"color": "blue"}, "color"),
])
def test_bad_submissions_are_refused_and_nothing_is_written(fields, field):
    make_pool("q")
    with pytest.raises(ValidationFailed) as exc:
        _submit(**fields)
    assert field in exc.value.details
    assert not Task.objects.exists() and not Event.objects.filter(type__startswith="task.").exists()


def test_an_unknown_pool_and_a_past_deadline_are_refused():
    with pytest.raises(ValidationFailed):
        _submit(pool="nowhere")
    make_pool("q")
    with pytest.raises(ValidationFailed):
        _submit(deadline=timezone.now() - timedelta(seconds=1))


def test_only_operators_and_agents_of_the_pool_submit():
    q, other = make_pool("q"), make_pool("other")
    make_agent(q, "inside")
    make_agent(other, "outside")
    assert task_submit(actor=as_agent("inside"), pool="q").submitted_by == "agent:inside"
    with pytest.raises(Forbidden):
        task_submit(actor=as_agent("outside"), pool="q")
    with pytest.raises(Forbidden):
        task_submit(actor=Actor("user", "viewer"), pool="q")


def test_a_batch_is_all_or_nothing():
    make_pool("q")
    _submit(task_id="taken")
    with pytest.raises(Conflict):
        task_submit_batch(actor=OPERATOR, tasks=[{"pool": "q", "task_id": "b1"}, {"pool": "q", "task_id": "taken"}])
    with pytest.raises(ValidationFailed) as exc:
        task_submit_batch(actor=OPERATOR, tasks=[{"pool": "q"}, {"pool": "q", "priority": "nope"}])
    assert "tasks" in exc.value.details
    with pytest.raises(ValidationFailed):
        task_submit_batch(actor=OPERATOR, tasks=[{"pool": "q", "task_id": "d"}, {"pool": "q", "task_id": "d"}])
    assert list(Task.objects.values_list("task_id", flat=True)) == ["taken"]
    assert len(task_submit_batch(actor=OPERATOR, tasks=[{"pool": "q"} for _ in range(5)])) == 5


def test_higher_priority_first_then_oldest_first():
    pool = make_pool("q")
    for task_id, priority in [("n1", "normal"), ("l1", "low"), ("u1", "urgent"), ("n2", "normal"), ("c1", "critical")]:
        _submit(task_id=task_id, priority=priority)
    make_agent(pool, "w", task_capacity=10)
    claimed = task_claim(agent_id="w", actor=as_agent("w"), max_tasks=10)
    assert [t.task_id for t in claimed] == ["u1", "c1", "n1", "n2", "l1"]


def test_a_task_that_waited_longer_than_the_aging_period_moves_up_one_level():
    pool = make_pool("q")
    with override_settings(TETHER_TASK_AGING_SECONDS=60):
        old_low = _submit(task_id="old-low", priority="low")
        old_normal = _submit(task_id="old-normal", priority="normal")
        # Submitted 2 periods earlier: low has aged past normal (one level), not past high.
        Task.objects.filter(pk__in=[old_low.pk]).update(
            submitted_at=old_low.submitted_at - timedelta(seconds=70),
            queue_order=old_low.queue_order - timedelta(seconds=70),
        )
        _submit(task_id="new-normal", priority="normal")
        _submit(task_id="new-high", priority="high")
    assert old_normal.queue_order < Task.objects.get(task_id="new-normal").queue_order
    make_agent(pool, "w", task_capacity=1)
    order = []
    for _ in range(4):
        (task,) = task_claim(agent_id="w", actor=as_agent("w"))
        order.append(task.task_id)
        task_complete(task_id=task.task_id, actor=as_agent("w"), attempt=task.attempt)
    assert order == ["new-high", "old-low", "old-normal", "new-normal"]


def test_low_never_starves_a_task_waiting_long_enough_overtakes_fresh_urgent_ones():
    pool = make_pool("q")
    with override_settings(TETHER_TASK_AGING_SECONDS=10):
        starving = _submit(task_id="starving", priority="low")
        Task.objects.filter(pk=starving.pk).update(queue_order=starving.queue_order - timedelta(seconds=41))
        for i in range(3):
            _submit(task_id=f"urgent-{i}", priority="urgent")
    make_agent(pool, "w")
    assert [t.task_id for t in task_claim(agent_id="w", actor=as_agent("w"))] == ["starving"]


def test_a_task_no_agent_can_serve_does_not_hold_up_the_tasks_behind_it():
    pool = make_pool("q")
    _submit(task_id="needs-gpu", priority="urgent", requirements={"capabilities": ["gpu"]})
    for i in range(3):
        _submit(task_id=f"plain-{i}", priority="low")
    make_agent(pool, "w", capabilities=["chrome"], task_capacity=5)
    placed = tasks_place(pool=pool)
    assert sorted(t.task_id for t in placed) == ["plain-0", "plain-1", "plain-2"]
    assert _task("needs-gpu").status == Task.Status.QUEUED
    make_agent(pool, "gpu-box", capabilities=["chrome", "gpu"])
    assert [t.task_id for t in tasks_place(pool=pool)] == ["needs-gpu"]
    assert _task("needs-gpu").agent.agent_id == "gpu-box"


def test_requirements_on_agent_type_region_and_tags_are_met():
    pool = make_pool("q")
    make_agent(pool, "us-worker", agent_type="worker", region="us", tags=["fast"], task_capacity=5)
    make_agent(pool, "eu-general", agent_type="general", region="eu", tags=["fast", "residential"], task_capacity=5)
    _submit(task_id="eu", requirements={"region": "eu"})
    _submit(task_id="worker", requirements={"agent_type": "worker"})
    _submit(task_id="residential", requirements={"tags": ["residential", "fast"]})
    tasks_place(pool=pool)
    assert {t.task_id: t.agent.agent_id for t in Task.objects.select_related("agent")} == {
        "eu": "eu-general", "worker": "us-worker", "residential": "eu-general",
    }


def test_placement_respects_task_capacity_agents_own_over_the_pools():
    pool = make_pool("q", task_capacity=2)
    make_agent(pool, "default")  # the pool's 2
    make_agent(pool, "small", task_capacity=1)
    for i in range(6):
        _submit(task_id=f"t{i}")
    assert len(tasks_place(pool=pool)) == 3
    held = {a: Task.objects.filter(agent__agent_id=a, status="assigned").count() for a in ("default", "small")}
    assert held == {"default": 2, "small": 1}
    assert Task.objects.filter(status="queued").count() == 3


def test_unhealthy_busy_and_draining_agents_get_no_tasks():
    pool = make_pool("q", min_health_score=0.5)
    make_agent(pool, "sick", load_metrics={"cpu": 100, "memory": 100, "error_rate": 1.0}, task_capacity=5)
    make_agent(pool, "busy", task_capacity=5)
    agent_set_status(agent_id="busy", status="busy", actor=as_agent("busy"))
    make_agent(pool, "leaving", task_capacity=5)
    Agent.objects.filter(agent_id="leaving").update(status=Agent.Status.DRAINING)
    _submit(task_id="t")
    assert Agent.objects.get(agent_id="sick").health_score < 0.5
    assert tasks_place(pool=pool) == []
    assert task_claim(agent_id="sick", actor=as_agent("sick")) == []
    assert task_claim(agent_id="busy", actor=as_agent("busy")) == []
    assert _task("t").status == "queued"


@pytest.mark.parametrize("strategy, expected", [
    ("least_connections", {"a": 2, "b": 2, "c": 2}),
    ("round_robin", {"a": 2, "b": 2, "c": 2}),
    ("weighted_round_robin", {"a": 1, "b": 1, "c": 4}),
    ("resource_based", {"a": 0, "b": 0, "c": 6}),
    ("geographic", {"a": 2, "b": 2, "c": 2}),
])
def test_each_strategy_splits_the_queue_its_way(strategy, expected):
    pool = make_pool("q", strategy=strategy, task_capacity=6)
    make_agent(pool, "a", weight=1.0, load_metrics={"cpu": 50})
    make_agent(pool, "b", weight=1.0, load_metrics={"cpu": 40})
    make_agent(pool, "c", weight=4.0, load_metrics={"cpu": 0})
    for i in range(6):
        _submit(task_id=f"t{i}")
    assert len(tasks_place(pool=pool)) == 6
    split = {a: Task.objects.filter(agent__agent_id=a).count() for a in "abc"}
    assert split == expected


def test_random_strategy_places_every_task_within_capacity():
    pool = make_pool("q", strategy="random", task_capacity=2)
    for name in "abc":
        make_agent(pool, name)
    for i in range(6):
        _submit(task_id=f"t{i}")
    assert len(tasks_place(pool=pool)) == 6
    assert sorted(Task.objects.values_list("agent__agent_id", flat=True)) == ["a", "a", "b", "b", "c", "c"]


def test_the_agent_starts_and_completes_with_its_attempt_and_a_stale_attempt_is_refused():
    pool = make_pool("q")
    make_agent(pool, "w")
    _submit(task_id="t")
    (task,) = task_claim(agent_id="w", actor=as_agent("w"))
    with pytest.raises(StaleFencingToken):
        task_start(task_id="t", actor=as_agent("w"), attempt=task.attempt + 1)
    make_agent(pool, "other")
    with pytest.raises(Forbidden):
        task_start(task_id="t", actor=as_agent("other"), attempt=task.attempt)
    task_start(task_id="t", actor=as_agent("w"), attempt=1)
    done = task_complete(task_id="t", actor=as_agent("w"), attempt=1, result={"ok": True})
    assert (done.status, done.result, done.agent.agent_id) == ("completed", {"ok": True}, "w")
    assert done.started_at and done.finished_at
    # Completing again changes nothing; other calls on an ended task are refused.
    assert task_complete(task_id="t", actor=as_agent("w"), attempt=1).status == "completed"
    with pytest.raises(InvalidTransition):
        task_start(task_id="t", actor=as_agent("w"), attempt=1)
    types = list(Event.objects.filter(task_id="t").order_by("seq").values_list("type", flat=True))
    assert types == ["task.submitted", "task.assigned", "task.started", "task.completed"]


def test_complete_on_an_assigned_task_implies_its_start():
    pool = make_pool("q")
    make_agent(pool, "w")
    _submit(task_id="t")
    task_claim(agent_id="w", actor=as_agent("w"))
    task_complete(task_id="t", actor=as_agent("w"), attempt=1)
    assert list(Event.objects.filter(task_id="t", type__in=["task.started", "task.completed"]).values_list(
        "from_status", "to_status")) == [("assigned", "running"), ("running", "completed")]


def test_fail_with_retry_requeues_with_attempt_plus_one_until_max_attempts_then_fails():
    pool = make_pool("q")
    make_agent(pool, "w")
    _submit(task_id="t", max_attempts=2)
    task_claim(agent_id="w", actor=as_agent("w"))
    task = task_fail(task_id="t", actor=as_agent("w"), attempt=1, error="timeout\ntraceback", retry=True)
    assert (task.status, task.attempt, task.agent_id) == ("queued", 2, None)
    task_claim(agent_id="w", actor=as_agent("w"))
    # The first attempt's late call is fenced off.
    with pytest.raises(StaleFencingToken):
        task_complete(task_id="t", actor=as_agent("w"), attempt=1)
    task = task_fail(task_id="t", actor=as_agent("w"), attempt=2, error="again", retry=True)
    assert (task.status, task.attempt, task.error) == ("failed", 2, "again")
    assert Event.objects.filter(task_id="t", type="task.requeued").count() == 1
    assert Event.objects.get(task_id="t", type="task.failed").data["attempts_exhausted"] is True


def test_fail_without_retry_is_a_dead_letter():
    pool = make_pool("q")
    make_agent(pool, "w")
    _submit(task_id="t")
    task_claim(agent_id="w", actor=as_agent("w"))
    assert task_fail(task_id="t", actor=as_agent("w"), attempt=1, error="bad input").status == "failed"


@pytest.mark.parametrize("lose", [
    lambda pool: agent_mark_stale(agent_id="lost", actor=OPERATOR),
    lambda pool: agent_drain(agent_id="lost", actor=OPERATOR),
    lambda pool: agent_deregister(agent_id="lost", actor=as_agent("lost")),
    lambda pool: agent_register(pool=pool, agent_id="lost", actor=OPERATOR),
], ids=["stale", "drained", "deregistered", "registered-again"])
def test_a_lost_agents_tasks_go_back_to_the_queue_with_attempt_plus_one(lose):
    pool = make_pool("q", task_capacity=3)
    make_agent(pool, "lost")
    _submit(task_id="assigned")
    _submit(task_id="running")
    task_claim(agent_id="lost", actor=as_agent("lost"), max_tasks=2)
    task_start(task_id="running", actor=as_agent("lost"), attempt=1)
    lose(pool)
    for task_id in ("assigned", "running"):
        task = _task(task_id)
        assert (task.status, task.attempt, task.agent_id) == ("queued", 2, None)
    # The lost agent's late calls change nothing.
    with pytest.raises(StaleFencingToken):
        task_complete(task_id="running", actor=as_agent("lost"), attempt=1)
    assert _task("running").status == "queued"
    # ... and a healthy agent of the pool gets them.
    make_agent(pool, "healthy")
    assert sorted(t.task_id for t in tasks_place(pool=pool)) == ["assigned", "running"]


def test_a_lost_agents_task_on_its_last_attempt_fails():
    pool = make_pool("q")
    make_agent(pool, "lost")
    _submit(task_id="t", max_attempts=1)
    task_claim(agent_id="lost", actor=as_agent("lost"))
    agent_mark_stale(agent_id="lost", actor=OPERATOR)
    assert _task("t").status == "failed"


def test_the_sweep_requeues_what_an_interrupted_failover_left():
    pool = make_pool("q")
    make_agent(pool, "lost")
    _submit(task_id="t")
    task_claim(agent_id="lost", actor=as_agent("lost"))
    Agent.objects.filter(agent_id="lost").update(status=Agent.Status.STALE)  # failover interrupted
    assert tasks_requeue_lost(actor=OPERATOR) == {"requeued": 1, "failed": 0}
    assert tasks_requeue_lost(actor=OPERATOR) == {"requeued": 0, "failed": 0}


def test_tasks_not_started_by_their_deadline_expire():
    pool = make_pool("q")
    make_agent(pool, "w")
    soon = timezone.now() + timedelta(seconds=30)
    _submit(task_id="queued", deadline=soon)
    _submit(task_id="assigned", deadline=soon, priority="urgent")
    _submit(task_id="running", deadline=soon, priority="urgent")
    _submit(task_id="no-deadline")
    task_claim(agent_id="w", actor=as_agent("w"))
    pool.task_capacity = 2
    pool.save(update_fields=["task_capacity"])
    task_claim(agent_id="w", actor=as_agent("w"))
    started = [t for t in Task.objects.filter(status="assigned").order_by("pk")][-1]
    task_start(task_id=started.task_id, actor=as_agent("w"), attempt=1)
    assert tasks_expire_overdue(actor=OPERATOR, now=timezone.now()) == {"expired": 0, "checked": 0}
    result = tasks_expire_overdue(actor=OPERATOR, now=soon + timedelta(seconds=1))
    assert result["expired"] == 2
    statuses = dict(Task.objects.values_list("task_id", "status"))
    assert statuses["queued"] == "expired" and statuses["no-deadline"] == "queued"
    assert statuses[started.task_id] == "running"


def test_a_task_needing_a_profile_gets_a_fenced_assignment_and_gives_it_back():
    pool = make_pool("q", task_capacity=2)
    make_profile("octo-7", pool="q")
    make_agent(pool, "w", capacity=2)
    _submit(task_id="first", requirements={"profile_id": "octo-7"})
    _submit(task_id="second", requirements={"profile_id": "octo-7"})
    placed = tasks_place(pool=pool)
    assert [t.task_id for t in placed] == ["first"]  # one profile, one holder: the second waits
    first = _task("first")
    assert first.assignment.status == "active" and first.assignment.agent_id == first.agent_id
    assert Event.objects.get(task_id="first", type="task.assigned").data["fencing_token"] == first.assignment.fencing_token
    task_complete(task_id="first", actor=as_agent("w"), attempt=1)
    assert Assignment.objects.get(pk=first.assignment_id).status == "released"
    (second,) = tasks_place(pool=pool)
    assert second.task_id == "second"
    assert second.assignment.fencing_token > first.assignment.fencing_token


def test_a_profile_backed_task_of_a_lost_agent_releases_its_profile_and_is_placed_again():
    pool = make_pool("q")
    make_profile("octo-1", pool="q")
    make_agent(pool, "lost")
    _submit(task_id="t", requirements={"profile_id": "octo-1"})
    (task,) = task_claim(agent_id="lost", actor=as_agent("lost"))
    old = task.assignment
    agent_mark_stale(agent_id="lost", actor=OPERATOR)
    assert Assignment.objects.get(pk=old.pk).status == "released"
    make_agent(pool, "healthy")
    (again,) = tasks_place(pool=pool)
    assert again.assignment.agent.agent_id == "healthy" and again.assignment.fencing_token > old.fencing_token


def test_cancel_by_operator_or_submitter_and_never_a_running_task():
    pool = make_pool("q")
    make_agent(pool, "w")
    make_agent(pool, "submitter")
    task_submit(actor=as_agent("submitter"), pool="q", task_id="mine")
    _submit(task_id="ops")
    with pytest.raises(Forbidden):
        task_cancel(task_id="ops", actor=as_agent("submitter"))
    assert task_cancel(task_id="mine", actor=as_agent("submitter")).status == "cancelled"
    assert task_cancel(task_id="mine", actor=as_agent("submitter")).status == "cancelled"  # idempotent
    task_claim(agent_id="w", actor=as_agent("w"))
    task_start(task_id="ops", actor=as_agent("w"), attempt=1)
    with pytest.raises(InvalidTransition):
        task_cancel(task_id="ops", actor=OPERATOR)


def test_clearing_a_queue_cancels_that_priority_only_with_an_event_each_and_one_queue_cleared():
    make_pool("q")
    make_pool("r")
    for i in range(3):
        _submit(task_id=f"q-low-{i}", priority="low")
    _submit(task_id="q-high", priority="high")
    _submit(pool="r", task_id="r-low", priority="low")
    assert queue_clear(priority="low", pool="q", actor=OPERATOR) == 3
    assert dict(Task.objects.values_list("task_id", "status"))["r-low"] == "queued"
    assert Event.objects.filter(type="task.cancelled").count() == 3
    cleared = Event.objects.get(type="queue.cleared")
    assert cleared.data == {"priority": "low", "pool": "q", "cleared": 3}
    assert queue_clear(priority="low", actor=OPERATOR) == 1
    with pytest.raises(Forbidden):
        queue_clear(priority="low", actor=as_agent("x"))
    with pytest.raises(ValidationFailed):
        queue_clear(priority="someday", actor=OPERATOR)


def test_queue_sizes_status_and_stats():
    pool = make_pool("q")
    make_agent(pool, "w", task_capacity=2)
    for i, priority in enumerate(["urgent", "low", "low", "normal"]):
        _submit(task_id=f"t{i}", priority=priority)
    task_claim(agent_id="w", actor=as_agent("w"), max_tasks=2)  # urgent and normal
    task_complete(task_id="t0", actor=as_agent("w"), attempt=1)
    sizes = queue_sizes()
    assert sizes["queues"] == {"urgent": 0, "critical": 0, "high": 0, "normal": 0, "low": 2}
    assert sizes["pools"] == {"q": {"urgent": 0, "critical": 0, "high": 0, "normal": 0, "low": 2}}
    status = task_status(pool="q")
    assert (status["submitted"], status["queued"], status["assigned"], status["completed"]) == (4, 2, 1, 1)
    assert status["agents"] == {"w": {"assigned": 1, "running": 0, "completed": 1, "failed": 0}}
    assert status["success_rate"] == 1.0 and status["average_distribution_seconds"] >= 0
    stats = queue_stats()
    assert stats["queues"]["low"]["size"] == 2 and stats["queues"]["low"]["oldest_age_seconds"] >= 0
    assert stats["queues"]["urgent"]["assigned_last_minute"] == 1
    assert stats["queues"]["urgent"]["wait_p50_seconds"] is not None
    assert stats["pools"]["q"]["low"]["size"] == 2


def test_heartbeat_reply_carries_the_agents_tasks():
    pool = make_pool("q", task_capacity=2)
    make_agent(pool, "w")
    _submit(task_id="low", priority="low")
    _submit(task_id="high", priority="high")
    task_claim(agent_id="w", actor=as_agent("w"), max_tasks=2)
    result = agent_heartbeat(agent_id="w", actor=as_agent("w"))
    assert [t.task_id for t in result.tasks] == ["high", "low"]
    # The usual heartbeat (load metrics, what it holds) asks "any open task?" with its read of the
    # agent's assignments, on PostgreSQL: the same reply, with assignments held or none.
    make_profile("hp")
    held = assignment_create(profile_id="hp", agent_id="w", actor=as_agent("w"))
    for reported in ([held.assignment_id], []):
        result = agent_heartbeat(agent_id="w", actor=as_agent("w"), load_metrics={"cpu": 5}, reported=reported)
        assert [t.task_id for t in result.tasks] == ["high", "low"]
    assert result.assigned == [held.assignment_id]
    for task_id in ("high", "low"):
        task_complete(task_id=task_id, actor=as_agent("w"), attempt=1)
    result = agent_heartbeat(agent_id="w", actor=as_agent("w"), load_metrics={"cpu": 5}, reported=[held.assignment_id])
    assert result.tasks == [] and result.revoked == [] and result.assigned == []


def test_the_dispatch_consumer_places_after_a_submit_or_a_freed_slot():
    pool = make_pool("q")
    make_agent(pool, "w")
    _submit(task_id="t1")
    _submit(task_id="t2")
    tasks_dispatch_for_events([{"type": "task.submitted", "pool": "q"}])
    assert _task("t1").status == "assigned" and _task("t2").status == "queued"
    tasks_dispatch_for_events([{"type": "task.assigned", "pool": "q"}])  # not a trigger
    task_complete(task_id="t1", actor=as_agent("w"), attempt=1)
    tasks_dispatch_for_events([{"type": "task.completed", "pool": "q"}])
    assert _task("t2").status == "assigned"


def test_the_placement_sweep_places_every_pools_queue():
    for name in ("p1", "p2"):
        pool = make_pool(name)
        make_agent(pool, f"{name}-w")
        _submit(pool=name)
    assert tasks_place_all(actor=OPERATOR) == {"placed": 2, "pools": 2}
    assert tasks_place_all(actor=OPERATOR) == {"placed": 0, "pools": 0}


def test_after_commit_a_submit_is_placed_and_a_freed_slot_takes_the_next_task(django_capture_on_commit_callbacks):
    pool = make_pool("q")
    make_agent(pool, "w")
    with django_capture_on_commit_callbacks(execute=True):
        _submit(task_id="first")
        _submit(task_id="second")
    assert _task("first").status == "assigned" and _task("second").status == "queued"
    with django_capture_on_commit_callbacks(execute=True):
        task_complete(task_id="first", actor=as_agent("w"), attempt=1)
    assert _task("second").status == "assigned" and _task("second").agent.agent_id == "w"


def test_after_a_failover_commits_the_requeued_tasks_go_to_a_healthy_agent(django_capture_on_commit_callbacks):
    pool = make_pool("q")
    make_agent(pool, "lost")
    make_agent(pool, "healthy")
    Agent.objects.filter(agent_id="healthy").update(status=Agent.Status.BUSY)  # no room for new work yet
    _submit(task_id="t")
    task_claim(agent_id="lost", actor=as_agent("lost"))
    Agent.objects.filter(agent_id="healthy").update(status=Agent.Status.ACTIVE)
    with django_capture_on_commit_callbacks(execute=True):
        agent_mark_stale(agent_id="lost", actor=OPERATOR)
    task = _task("t")
    assert (task.status, task.attempt, task.agent.agent_id) == ("assigned", 2, "healthy")


def test_a_task_naming_an_unknown_profile_or_one_of_another_pool_is_refused():
    make_pool("q")
    make_pool("other")
    make_profile("elsewhere", pool="other")
    make_profile("free-floating")
    with pytest.raises(ValidationFailed):
        _submit(requirements={"profile_id": "ghost"})
    with pytest.raises(ValidationFailed):
        _submit(requirements={"profile_id": "elsewhere"})
    assert _submit(requirements={"profile_id": "free-floating"}).req_profile_id == "free-floating"


def test_a_late_call_on_a_cancelled_or_expired_task_is_a_conflict_not_a_forbidden():
    pool = make_pool("q")
    make_agent(pool, "w", task_capacity=2)
    _submit(task_id="c")
    _submit(task_id="e", deadline=timezone.now() + timedelta(seconds=5))
    task_claim(agent_id="w", actor=as_agent("w"), max_tasks=2)
    task_cancel(task_id="c", actor=OPERATOR)
    tasks_expire_overdue(actor=OPERATOR, now=timezone.now() + timedelta(seconds=10))
    for task_id in ("c", "e"):
        with pytest.raises(InvalidTransition):
            task_start(task_id=task_id, actor=as_agent("w"), attempt=1)


def test_tasks_waiting_for_a_held_profile_do_not_hold_up_the_tasks_behind_them():
    pool = make_pool("q")
    make_profile("busy-profile", pool="q")
    make_agent(pool, "holder", capacity=1)
    make_agent(pool, "w")
    for i in range(10):
        _submit(task_id=f"needs-{i}", priority="urgent", requirements={"profile_id": "busy-profile"})
    _submit(task_id="plain", priority="low")
    (first,) = task_claim(agent_id="holder", actor=as_agent("holder"))
    assert first.task_id == "needs-0"  # it holds the profile now; the other nine wait for it
    assert [t.task_id for t in task_claim(agent_id="w", actor=as_agent("w"))] == ["plain"]


def test_an_operator_resubmits_a_dead_letter_as_a_new_task():
    pool = make_pool("q")
    make_agent(pool, "w")
    _submit(task_id="dead", priority="high", payload={"n": 1}, requirements={"capabilities": ["chrome"]})
    with pytest.raises(InvalidTransition):
        task_resubmit(task_id="dead", actor=OPERATOR)  # still queued
    Agent.objects.filter(agent_id="w").update(capabilities=["chrome"])
    task_claim(agent_id="w", actor=as_agent("w"))
    task_fail(task_id="dead", actor=as_agent("w"), attempt=1, error="bad")
    with pytest.raises(Forbidden):
        task_resubmit(task_id="dead", actor=as_agent("w"))
    again = task_resubmit(task_id="dead", actor=OPERATOR)
    assert again.task_id != "dead" and (again.status, again.attempt, again.priority) == ("queued", 1, "high")
    assert again.payload == {"n": 1} and again.requirements == {"capabilities": ["chrome"]}
    assert _task("dead").status == "failed"
    assert Event.objects.filter(type="task.submitted", data__resubmitted_from="dead").count() == 1
