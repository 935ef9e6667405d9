"""End to end through a real Celery beat (its own process) and a real Celery worker (in a thread of
this process, on the test database): an agent that stops heartbeating loses its assignment to
another agent of its pool within the pool's heartbeat timeout plus one beat interval."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from agents.services import agent_heartbeat, agent_register
from assignments.models import Assignment, JobRun
from assignments.services import assignment_create
from config.actors import Actor
from tests.factories import PoolFactory, ProfileFactory

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

HEARTBEAT_TIMEOUT = 2  # seconds, the pool's
BEAT_INTERVAL = 1.0  # seconds, the staleness job's
# Delivery through the broker, the worker picking the task up and the commit: measured in
# milliseconds, allowed one second so that a busy CI machine does not fail the test.
SLACK = 1.0


@pytest.fixture
def celery_queue():
    return f"tether-test-{os.getpid()}"


@pytest.fixture
def celery_worker(celery_queue):
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    with app.connection_for_write() as conn:
        from kombu import Queue

        Queue(celery_queue, channel=conn.default_channel).purge() if _queue_exists(conn, celery_queue) else None
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, queues=[celery_queue],
                      shutdown_timeout=20) as worker:
        yield worker
    connections.close_all()


def _queue_exists(conn, name) -> bool:
    try:
        conn.default_channel.queue_declare(name, passive=True)
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture
def celery_beat(tmp_path, celery_queue):
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=settings.SECRET_KEY,
        TETHER_VAR_DIR=str(tmp_path),
        TETHER_CELERY_QUEUE=celery_queue,
        TETHER_JOB_STALE_INTERVAL_SECONDS=str(BEAT_INTERVAL),
        TETHER_JOB_REBALANCE_INTERVAL_SECONDS="1",
        TETHER_JOB_EXPIRY_INTERVAL_SECONDS="1",
        TETHER_JOB_RECONCILE_INTERVAL_SECONDS="600",
        TETHER_JOB_ROLLUP_INTERVAL_SECONDS="600",
        TETHER_JOB_ARCHIVE_INTERVAL_SECONDS="600",
    )
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=Path(settings.BASE_DIR), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    yield beat
    beat.terminate()
    try:
        beat.wait(timeout=10)
    except subprocess.TimeoutExpired:
        beat.kill()
        beat.wait()


def _wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def test_a_silent_agents_assignment_moves_within_heartbeat_timeout_plus_one_beat(client, celery_beat, celery_worker):
    operator = Actor.system("test")
    pool = PoolFactory(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
    _, silent_token = agent_register(pool=pool, agent_id="silent", actor=operator, capacity=2)
    agent_register(pool=pool, agent_id="alive", actor=operator, capacity=2)
    profile = ProfileFactory(pool=pool)
    held = assignment_create(profile_id=profile.profile_id, agent_id="silent", actor=Actor.for_agent("silent"))

    # Both agents heartbeat (every 0.3 s) until "silent" falls silent.
    stop, silence = threading.Event(), threading.Event()
    last_heartbeat = {}

    def heartbeats():
        try:
            while not stop.is_set():
                agent_heartbeat(agent_id="alive", actor=Actor.for_agent("alive"), reported=[])
                if not silence.is_set():
                    agent_heartbeat(agent_id="silent", actor=Actor.for_agent("silent"), reported=[held.assignment_id])
                    last_heartbeat["silent"] = time.monotonic()
                stop.wait(0.3)
        finally:
            connections.close_all()

    thread = threading.Thread(target=heartbeats, daemon=True)
    thread.start()
    try:
        # The pipeline works end to end before the clock starts: beat → broker → worker → database.
        assert _wait_for(lambda: JobRun.objects.filter(name="agents_mark_overdue_stale").exists(), timeout=30), (
            "no staleness run within 30 s")
        assert Assignment.objects.get(pk=held.pk).agent.agent_id == "silent"
        silence.set()
        time.sleep(0.4)  # let a heartbeat in flight finish: the clock starts at the last one

        moved = _wait_for(
            lambda: Assignment.objects.filter(pk=held.pk, agent__agent_id="alive").first(),
            timeout=HEARTBEAT_TIMEOUT + BEAT_INTERVAL + SLACK + 5,
        )
        elapsed = time.monotonic() - last_heartbeat["silent"]
    finally:
        stop.set()
        thread.join(timeout=10)

    assert moved is not None, "the assignment never moved to the live agent"
    assert HEARTBEAT_TIMEOUT <= elapsed <= HEARTBEAT_TIMEOUT + BEAT_INTERVAL + SLACK, elapsed
    assert moved.status == Assignment.Status.ACTIVE
    assert moved.fencing_token > held.fencing_token

    # Its next heartbeat (through the API) tells the old agent to drop it.
    response = client.post(
        "/api/agents/silent/heartbeat", {"assignments": [str(held.assignment_id)]},
        content_type="application/json", HTTP_AUTHORIZATION=f"Token {silent_token}",
    )
    assert response.status_code == 200, response.content
    assert response.json()["revoked"] == [str(held.assignment_id)]
    assert response.json()["status"] == "active"
