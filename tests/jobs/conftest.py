from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent
from assignments.models import Assignment
from assignments.services import assignment_create
from config.actors import Actor
from tests.factories import AgentFactory, PoolFactory, ProfileFactory


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def job_actor():
    return Actor.system("job-under-test")


@pytest.fixture
def fleet(db):
    """One pool (short timeouts) with two agents and three profiles; nothing held yet."""

    class Fleet:
        def __init__(self):
            self.pool = PoolFactory(heartbeat_timeout_seconds=5, assignment_idle_timeout_seconds=60)
            self.a = AgentFactory(pool=self.pool, agent_id="agent-a", capacity=4)
            self.b = AgentFactory(pool=self.pool, agent_id="agent-b", capacity=4)
            self.profiles = [ProfileFactory(profile_id=f"prof-{i}", pool=self.pool) for i in range(3)]

        def take(self, profile, agent) -> Assignment:
            return assignment_create(profile_id=profile.profile_id, agent_id=agent.agent_id,
                                     actor=Actor.for_agent(agent.agent_id))

    return Fleet()


def set_scene(model, pk, **fields):
    """Move a row's clock back for the scene (tests only; behaviour goes through services)."""
    model.objects.filter(pk=pk).update(**fields)


def refresh(obj):
    obj.refresh_from_db()
    return obj


__all__ = ["ago", "set_scene", "refresh", "Agent", "Assignment"]


@pytest.fixture(autouse=True)
def _clean_assignment_cache():
    """Each test starts with no cached assignments (only this suite's keys: `asg:*`)."""
    from django.core.cache import cache

    def clean():
        if hasattr(cache, "delete_pattern"):
            cache.delete_pattern("asg:*")
        else:
            cache.clear()

    clean()
    yield
    clean()


def start_redis(port: int):
    """A Redis server of the test's own (no persistence), on a port of this suite's range."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server on PATH to stop and start a Redis of its own")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def stop_redis(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait(timeout=10)
