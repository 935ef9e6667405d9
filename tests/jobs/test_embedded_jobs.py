"""Embedded mode (no broker): the web process runs the jobs on its own event loop, and their events
reach the live pages through the in-memory channel layer."""

import asyncio
import contextlib

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from rest_framework.authtoken.models import Token

from agents.models import Agent
from assignments.services import assignment_create
from config import embedded_jobs
from config.actors import Actor
from tests.factories import AgentFactory, PoolFactory, ProfileFactory
from tests.jobs.conftest import ago

pytestmark = [pytest.mark.django_db(transaction=True)]


def _scene():
    from django.contrib.auth import get_user_model

    pool = PoolFactory(heartbeat_timeout_seconds=1)
    lost = AgentFactory(pool=pool, agent_id="lost", capacity=2)
    AgentFactory(pool=pool, agent_id="fine", capacity=2, last_heartbeat=ago(-3600))  # stays fresh
    profile = ProfileFactory(pool=pool)
    held = assignment_create(profile_id=profile.profile_id, agent_id="lost", actor=Actor.for_agent("lost"))
    Agent.objects.filter(pk=lost.pk).update(last_heartbeat=ago(60))
    user = get_user_model().objects.create_user("watcher", is_staff=True)
    return held, Token.objects.create(user=user).key


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    TETHER_JOB_STALE_INTERVAL_SECONDS=0.2,
)
async def test_embedded_jobs_fail_over_a_silent_agent_and_the_page_hears_it_live(monkeypatch):
    from config.asgi import application

    held, key = await database_sync_to_async(_scene)()
    monkeypatch.setattr(embedded_jobs, "_task", None)
    app = embedded_jobs.with_embedded_jobs(application)
    ws = WebsocketCommunicator(app, "/assignments/events?types=agent.stale,assignment.reassigned",
                               headers=[(b"authorization", f"Token {key}".encode())])
    try:
        connected, _ = await ws.connect(timeout=5)
        assert connected
        assert embedded_jobs._task is not None and not embedded_jobs._task.done()
        got = []
        while len(got) < 2:
            message = await ws.receive_json_from(timeout=10)
            if "type" in message and message.get("seq"):
                got.append(message)
        assert [(m["type"], m["agent_id"]) for m in got] == [("agent.stale", "lost"), ("assignment.reassigned", "fine")]
        assert got[0]["actor"] == "system:agents_mark_overdue_stale"
        assert got[1]["assignment_id"] == str(held.assignment_id)
    finally:
        await ws.disconnect()
        task = embedded_jobs._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A job already in its thread finishes on its own: wait for it before the database is reset.
        assert await asyncio.get_running_loop().run_in_executor(None, embedded_jobs.idle.wait, 30)
