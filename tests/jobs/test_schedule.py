"""The one beat schedule: every job, at its interval from settings, routed to a registered task."""

from datetime import timedelta

from django.test import override_settings

from config.celery import app
from config.jobs import JOBS, beat_schedule


def test_every_job_is_on_the_beat_with_its_interval_from_settings_and_a_registered_task():
    app.loader.import_default_modules()  # the apps' tasks.py, as a worker loads them
    with override_settings(TETHER_JOB_STALE_INTERVAL_SECONDS=2.5, TETHER_JOB_ARCHIVE_INTERVAL_SECONDS=7200):
        schedule = beat_schedule()
    assert set(schedule) == set(JOBS)
    assert schedule["agents_mark_overdue_stale"]["schedule"] == timedelta(seconds=2.5)
    assert schedule["agents_mark_overdue_stale"]["options"] == {"expires": 2.5}
    assert schedule["events_archive_old"]["schedule"] == timedelta(hours=2)
    for entry in schedule.values():
        assert entry["task"] in app.tasks, entry["task"]


def test_the_celery_app_carries_the_schedule_built_from_settings():
    assert set(app.conf.beat_schedule) == set(JOBS)
    assert app.conf.beat_schedule["assignments_expire_idle"]["task"] == "assignments.expire_idle"


def test_by_default_failover_jobs_run_every_few_seconds():
    schedule = beat_schedule()
    for name in ("assignments_expire_idle", "agents_mark_overdue_stale", "pools_rebalance_all"):
        assert schedule[name]["schedule"] <= timedelta(seconds=5)
