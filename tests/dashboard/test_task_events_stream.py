"""task.* and queue.* events reach live subscribers, filtered by type and pool like any other."""

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from agents.services import agent_register
from pools.queue import queue_clear, task_submit
from pools.services import pool_create
from tests.dashboard.events_support import OPERATOR, nothing_more, receive_events, session_cookie_for, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _scene():
    pool, _ = pool_create(name="stream-q", actor=OPERATOR)
    pool_create(name="stream-other", actor=OPERATOR)
    agent_register(pool=pool, agent_id="stream-w", actor=OPERATOR)


def _work():
    task_submit(actor=OPERATOR, pool="stream-other", task_id="elsewhere", priority="low")
    task_submit(actor=OPERATOR, pool="stream-q", task_id="t1", priority="high")  # placed on stream-w after commit
    task_submit(actor=OPERATOR, pool="stream-q", task_id="t2", priority="low")
    queue_clear(priority="low", pool="stream-q", actor=OPERATOR)


async def test_task_events_stream_live_filtered_by_type_and_pool():
    user = await database_sync_to_async(get_user_model().objects.create_user)(username="tasks", password=None)
    headers = await database_sync_to_async(session_cookie_for)(user)
    await database_sync_to_async(_scene)()
    live = await ws_connect("/assignments/events?types=task.,queue.&pool=stream-q", headers=headers)
    await database_sync_to_async(_work)()
    events = await receive_events(live, 5)
    assert [(e["type"], e["data"].get("task_id")) for e in events] == [
        ("task.submitted", "t1"), ("task.assigned", "t1"), ("task.submitted", "t2"),
        ("task.cancelled", "t2"), ("queue.cleared", None),
    ]
    assert events[1]["agent_id"] == "stream-w" and events[1]["data"]["priority"] == "high"
    assert all(e["pool"] == "stream-q" for e in events)
    assert await nothing_more(live)
    await live.disconnect()
