"""`GET /health` says when each background job last ran."""

from datetime import timedelta

import pytest
from django.utils import timezone

import pools.jobs
from assignments.models import JobRun
from config.jobs import JOBS, job_run


def test_health_reports_each_jobs_last_run_and_degrades_when_a_job_stops_running(admin_client, fleet):
    client = admin_client  # the details are for operators (issue 10, item 9)
    beat = client.get("/health").json()["checks"]["beat"]
    # A fresh install, before the first beat: listed, not failing.
    assert beat["ok"] is True and beat["never_run"] == sorted(JOBS)
    assert all(job["last_run"] is None for job in beat["jobs"].values())

    for name in JOBS:
        job_run(name)
    response = client.get("/health")
    assert response.status_code == 200
    beat = response.json()["checks"]["beat"]
    assert beat["ok"] is True and beat["never_run"] == [], beat
    expiry = beat["jobs"]["assignments_expire_idle"]
    assert expiry["ok"] is True and expiry["age_seconds"] < 5 and expiry["last_run"].endswith("Z")
    assert expiry["result"]["idled"] == 0

    JobRun.objects.filter(name="agents_mark_overdue_stale").update(
        last_finished_at=timezone.now() - timedelta(minutes=10))
    beat = client.get("/health").json()["checks"]["beat"]
    assert beat["ok"] is False and "agents_mark_overdue_stale" in beat["error"]
    assert beat["jobs"]["agents_mark_overdue_stale"]["overdue"] is True
    assert client.get("/health").json()["status"] == "degraded"


def test_a_job_run_is_counted_and_a_failing_one_is_recorded(fleet, monkeypatch):
    job_run("pools_rebalance_all")
    job_run("pools_rebalance_all")
    assert JobRun.objects.get(name="pools_rebalance_all").runs == 2

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pools.jobs, "pools_rebalance_all", broken)
    # The runner records the failure and raises it (Celery logs it; the next beat tries again).
    with pytest.raises(RuntimeError, match="boom"):
        job_run("pools_rebalance_all")
    run = JobRun.objects.get(name="pools_rebalance_all")
    assert (run.last_ok, run.runs, run.last_error) == (False, 3, "RuntimeError: boom")
