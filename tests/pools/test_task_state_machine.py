"""The task table is the only gate: every task status change any write path records (submit aside)
was asked of `TASK_TRANSITIONS` first, with the same pair — placement, the agent's calls, retries,
failover, cancel, queue clear and the deadline sweep included."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.services import agent_mark_stale
from assignments.models import Event
from config.errors import InvalidTransition
from config.transitions import StateMachine
from pools.dispatch import task_claim, tasks_place
from pools.jobs import tasks_expire_overdue
from pools.models import TASK_TRANSITIONS, Task
from pools.queue import queue_clear, task_cancel, task_complete, task_fail, task_start, task_submit
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool


@pytest.fixture
def gate_calls(monkeypatch):
    calls = []
    original = StateMachine.check

    def spy(self, from_status, to_status, **kwargs):
        calls.append((self.name, str(from_status), str(to_status)))
        return original(self, from_status, to_status, **kwargs)

    monkeypatch.setattr(StateMachine, "check", spy)
    return calls


@pytest.mark.django_db
def test_every_task_write_path_asks_its_table(gate_calls):
    pool = make_pool("gates", task_capacity=4)
    make_agent(pool, "a1")

    def submit(task_id, **fields):
        return task_submit(actor=OPERATOR, pool="gates", task_id=task_id, **fields)

    for task_id in ("done", "implied", "retry", "dead", "lost", "cancel-assigned"):
        submit(task_id)
    task_claim(agent_id="a1", actor=as_agent("a1"), max_tasks=4)
    task_start(task_id="done", actor=as_agent("a1"), attempt=1)
    task_complete(task_id="done", actor=as_agent("a1"), attempt=1)
    task_complete(task_id="implied", actor=as_agent("a1"), attempt=1)
    task_fail(task_id="retry", actor=as_agent("a1"), attempt=1, retry=True)
    task_fail(task_id="dead", actor=as_agent("a1"), attempt=1)
    tasks_place(pool=pool)
    task_cancel(task_id="cancel-assigned", actor=OPERATOR)
    submit("cancel-queued")
    submit("cleared", priority="low")
    task_cancel(task_id="cancel-queued", actor=OPERATOR)
    queue_clear(priority="low", actor=OPERATOR)
    agent_mark_stale(agent_id="a1", actor=OPERATOR)  # "lost" and "retry" go back to the queue
    submit("late", deadline=timezone.now() + timedelta(seconds=5))
    tasks_expire_overdue(actor=OPERATOR, now=timezone.now() + timedelta(seconds=10))

    changes = [
        ("task", f, t) for f, t in Event.objects.filter(type__startswith="task.").exclude(from_status="")
        .order_by("seq").values_list("from_status", "to_status")
    ]
    missing = [change for change in changes if change not in gate_calls]
    assert missing == []
    for expected in [("queued", "assigned"), ("assigned", "running"), ("running", "completed"),
                     ("running", "queued"), ("running", "failed"), ("assigned", "cancelled"),
                     ("queued", "cancelled"), ("assigned", "queued"), ("queued", "expired")]:
        assert ("task", *expected) in changes, expected


def test_the_table_refuses_what_design_md_does_not_allow():
    for from_status, to_status in [("running", "cancelled"), ("running", "expired"), ("completed", "queued"),
                                   ("queued", "running"), ("queued", "completed"), ("failed", "queued")]:
        with pytest.raises(InvalidTransition):
            TASK_TRANSITIONS.check(from_status, to_status, subject="t")
    assert set(TASK_TRANSITIONS) == set(Task.Status.values)
