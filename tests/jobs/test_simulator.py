"""The simulator drives a live server through the public API for a while without an error, while
the jobs run beside it (as the beat would run them)."""

import threading
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.db import connections

from agents.models import Agent
from assignments.models import Assignment, Event
from config.jobs import job_run
from pools.models import Task

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@contextmanager
def jobs_running(names, *, every: float):
    """Run these jobs in a background thread, as the beat would, while the block runs. Yields the
    list of exceptions a job raised (empty when all went well)."""
    stop = threading.Event()
    failures = []

    def beat():
        try:
            while not stop.is_set():
                for name in names:
                    job_run(name)
                stop.wait(every)
        except Exception as exc:  # noqa: BLE001 — handed to the test
            failures.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=30)


def test_the_simulator_runs_a_fleet_through_the_api_for_a_while_with_no_error(live_server, capsys):
    jobs = ("agents_mark_overdue_stale", "pools_rebalance_all", "assignments_expire_idle", "waits_sweep")
    with jobs_running(jobs, every=0.5) as failures:
        # Raises CommandError if any request failed unexpectedly (5xx, unexpected 4xx, connection).
        # At least 40 rounds, however long they take: what is asserted below needs holds to end, and
        # in one CI run on a machine with heavy steal time a run of 8 s made 17 rounds (~40 usual)
        # and no release at all.
        call_command("simulate_agents", url=live_server.url, duration=8, min_rounds=40, tick=0.2,
                     heartbeat_timeout=3, crash_every=2, seed=7, agents=12, pools=3, tasks_per_minute=60)

    out = capsys.readouterr().out
    assert not failures, failures
    assert int(out.rsplit("'rounds': ", 1)[1].split(",", 1)[0]) >= 40, out[-500:]
    assert "errors: 0" in out, out[-2000:]
    assert Agent.objects.filter(agent_id__startswith="sim-").count() == 12
    assert Agent.objects.values("pool").distinct().count() == 3
    assert Assignment.objects.exists()
    assert Event.objects.filter(type="agent.registered").count() >= 12
    assert Event.objects.filter(type="assignment.created").exists()
    # Contention shows: takes by requirements and waits for busy profiles are served, outcomes reported.
    assert Event.objects.filter(type="profile.reported").exists(), out[-1500:]
    assert "by requirements" in out or "after waiting" in out, out[-1500:]
    assert Assignment.objects.filter(profile__profile_id__startswith="sim-", workflow_id__startswith="wf-").count() >= 3
    # Tasks flow too: submitted by the agents to their pools, placed, claimed, started and finished.
    assert Task.objects.filter(pool__name__startswith="sim-").count() >= 4
    assert Task.objects.filter(status=Task.Status.COMPLETED).exists()
    assert Event.objects.filter(type="task.started").exists() and Event.objects.filter(type="task.completed").exists()


def test_the_simulator_keeps_the_demo_fleet_alive_too(live_server, capsys):
    from config.actors import Actor
    from pools.services import pool_update

    call_command("load_demo")
    for name in ("k8s-prod", "docker-eu"):  # short timeouts: unattended, these agents would go stale at once
        pool_update(name=name, actor=Actor.system("test"), heartbeat_timeout_seconds=2)
    with jobs_running(("agents_mark_overdue_stale", "pools_rebalance_all"), every=0.3):
        call_command("simulate_agents", url=live_server.url, duration=6, tick=0.2, heartbeat_timeout=3,
                     crash_every=0, seed=3, agents=3, pools=1)

    out = capsys.readouterr().out
    assert "errors: 0" in out, out[-2000:]
    assert "also driving 5 agents of docker-eu, k8s-prod" in out
    # All five, including skyvern-k8s-3, which load_demo itself marked stale: adopted, it is back.
    statuses = list(Agent.objects.filter(pool__name__in=["k8s-prod", "docker-eu"]).values_list("status", flat=True))
    assert len(statuses) == 5 and set(statuses) <= {"active", "busy"}, statuses


def test_a_run_with_min_rounds_goes_on_past_its_duration_until_they_have_run(live_server, capsys):
    call_command("simulate_agents", url=live_server.url, duration=0.2, min_rounds=6, tick=0.1, crash_every=0,
                 seed=5, agents=2, pools=1, tasks_per_minute=0)
    out = capsys.readouterr().out
    assert "errors: 0" in out, out[-2000:]
    assert int(out.rsplit("'rounds': ", 1)[1].split(",", 1)[0]) == 6, out[-500:]
