"""The /tasks/ page: queues by priority per pool and the open tasks, in a fixed number of queries;
operators cancel a task and clear a queue after a confirmation step, through the services."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from assignments.models import Event
from pools.dispatch import task_claim
from pools.models import Task
from pools.queue import task_fail, task_submit_batch
from tests.dashboard.conftest import OPERATOR, make_scene
from tests.helpers import as_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_only(viewer):
    """A viewer's own client (the `client` fixture is shared with `operator_client`)."""
    client = Client()
    client.force_login(viewer)
    return client


def _queue(n, *, pool="pool-0", priority="normal", prefix="t"):
    task_submit_batch(actor=OPERATOR, tasks=[{"pool": pool, "priority": priority, "task_id": f"{prefix}{i}"}
                                            for i in range(n)])


def test_the_page_shows_queues_by_priority_and_open_tasks(viewer_client):
    make_scene(pools=2)
    _queue(3, priority="low")
    _queue(2, priority="urgent", prefix="u")
    task_claim(agent_id="agent-0-0", actor=as_agent("agent-0-0"))
    response = viewer_client.get("/tasks/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="queue-pool-0-low"' in html and 'data-testid="queue-pool-1-low"' in html
    assert 'data-live-types="task.,queue."' in html
    assert "u0" in html and "agent-0-0" in html  # the urgent one went first, to the claiming agent
    assert 'data-testid="clear-' not in html
    assert 'data-testid="cancel-' not in html  # viewers see no operator actions
    assert viewer_client.get("/tasks/?status=bogus").status_code == 400
    assert viewer_client.get("/tasks/?pool=pool-1&status=all&priority=low").status_code == 200


def test_the_page_costs_the_same_queries_with_many_tasks(operator_client):
    make_scene(pools=2)
    _queue(3)

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert operator_client.get("/tasks/").status_code == 200
        return len(ctx)

    few = count()
    _queue(60, prefix="more", priority="high")
    _queue(40, pool="pool-1", prefix="other", priority="low")
    assert count() == few


def test_operator_cancels_a_task_after_confirming(operator_client, viewer_only):
    make_scene()
    _queue(1)
    assert 'data-testid="cancel-t0"' in operator_client.get("/tasks/").content.decode()
    confirm = operator_client.get("/tasks/t0/cancel/")
    assert confirm.status_code == 200 and b"Cancel task" in confirm.content
    assert Task.objects.get(task_id="t0").status == "queued"  # the GET only asks
    assert viewer_only.post("/tasks/t0/cancel/").status_code == 403
    response = operator_client.post("/tasks/t0/cancel/", {"next": "/tasks/"})
    assert response.status_code == 302
    assert Task.objects.get(task_id="t0").status == "cancelled"
    assert Event.objects.get(type="task.cancelled").actor == "user:oper"
    assert operator_client.get("/tasks/nope/cancel/").status_code == 404


def test_operator_clears_a_queue_after_confirming(operator_client, viewer_only):
    make_scene(pools=2)
    _queue(3, priority="low")
    _queue(2, pool="pool-1", priority="low", prefix="o")
    confirm = operator_client.get("/tasks/queues/low/clear/?pool=pool-0")
    assert confirm.status_code == 200 and b"3 queued low" in confirm.content
    assert viewer_only.post("/tasks/queues/low/clear/", {"pool": "pool-0"}).status_code == 403
    assert operator_client.post("/tasks/queues/low/clear/", {"pool": "pool-0"}).status_code == 302
    assert Task.objects.filter(status="cancelled").count() == 3
    assert Task.objects.filter(pool__name="pool-1", status="queued").count() == 2
    assert Event.objects.get(type="queue.cleared").data["cleared"] == 3
    assert operator_client.get("/tasks/queues/someday/clear/").status_code == 404
    assert operator_client.get("/tasks/queues/low/clear/?pool=nowhere").status_code == 404


def test_operator_resubmits_a_failed_task_after_confirming(operator_client):
    make_scene()
    _queue(1)
    (task,) = task_claim(agent_id="agent-0-0", actor=as_agent("agent-0-0"))
    task_fail(task_id=task.task_id, actor=as_agent("agent-0-0"), attempt=1, error="site down")
    assert f'data-testid="resubmit-{task.task_id}"' in operator_client.get("/tasks/?status=failed").content.decode()
    confirm = operator_client.get(f"/tasks/{task.task_id}/resubmit/")
    assert confirm.status_code == 200 and b"site down" in confirm.content
    assert operator_client.post(f"/tasks/{task.task_id}/resubmit/").status_code == 302
    assert Task.objects.filter(status="queued").count() == 1
