"""Each task is handed out exactly once, however many claimers and placers race over one queue:
real threads, separate PostgreSQL connections (SKIP LOCKED is what is under test)."""

from collections import Counter

import pytest

from assignments.models import Event
from pools.dispatch import task_claim, tasks_place
from pools.models import Task
from pools.queue import task_complete, task_submit_batch
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool

AGENTS = 12
TASKS = 240


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_many_claimers_and_placers_over_one_queue_hand_out_each_task_once(run_in_threads):
    pool = make_pool("race", task_capacity=3)
    for i in range(AGENTS):
        make_agent(pool, f"w{i}")
    task_submit_batch(actor=OPERATOR, tasks=[{"pool": "race", "task_id": f"t{i}"} for i in range(TASKS)])

    def work(i):
        if i >= AGENTS:  # the dispatcher's push, racing the claims
            placed = 0
            for _ in range(20):
                placed += len(tasks_place(pool=pool, limit=10))
            return placed
        agent_id, done = f"w{i}", []
        while True:
            tasks = task_claim(agent_id=agent_id, actor=as_agent(agent_id), max_tasks=3)
            if not tasks:
                if not Task.objects.filter(status="queued").exists():
                    return done
                continue
            for task in tasks:
                task_complete(task_id=task.task_id, actor=as_agent(agent_id), attempt=task.attempt)
                done.append(task.task_id)

    results = run_in_threads(AGENTS + 2, work)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    completed = [task_id for r in results[:AGENTS] for task_id in r]
    assert sorted(completed) == sorted(f"t{i}" for i in range(TASKS))  # each once, none lost
    assigned = Counter(Event.objects.filter(type="task.assigned").values_list("task_id", flat=True))
    assert len(assigned) == TASKS and set(assigned.values()) == {1}
    assert Task.objects.filter(status="completed").count() == TASKS
    # More than one agent did the work.
    assert len({a for a in Task.objects.values_list("agent__agent_id", flat=True)}) > 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_claims_of_one_agent_never_exceed_its_task_capacity(run_in_threads):
    pool = make_pool("greedy", task_capacity=2)
    make_agent(pool, "g")
    task_submit_batch(actor=OPERATOR, tasks=[{"pool": "greedy"} for _ in range(20)])
    run_in_threads(8, lambda i: task_claim(agent_id="g", actor=as_agent("g"), max_tasks=5))
    assert Task.objects.filter(agent__agent_id="g", status="assigned").count() == 2
