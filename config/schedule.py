"""The background jobs' table: which service each job runs, its Celery task, how often — and the
one beat schedule built from it. Plain data (dotted paths, not imports), so that the Celery app
(config/celery.py) can read it while Django is still loading; `config.jobs` runs the jobs.

A job is a function in its app's `jobs.py` (the sweeps) taking `actor`, `now` and `limit` and
returning a small dict of counts. It is idempotent, bounded by `limit`, and safe on several workers
at once. Two things run them, both through `config.jobs.job_run`:
- Celery: the thin tasks in each app's `tasks.py`, on the beat schedule below;
- embedded mode (no broker, TETHER_EMBEDDED_JOBS): `config.embedded_jobs`, inside the web process.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings


@dataclass(frozen=True)
class Job:
    name: str
    service: str  # dotted path of the job function
    task: str  # the Celery task's name
    interval_setting: str

    @property
    def interval(self) -> float:
        return float(getattr(settings, self.interval_setting))


JOBS: dict[str, Job] = {
    job.name: job
    for job in [
        Job("assignments_expire_idle", "assignments.jobs.assignments_expire_idle",
            "assignments.expire_idle", "TETHER_JOB_EXPIRY_INTERVAL_SECONDS"),
        Job("agents_mark_overdue_stale", "agents.jobs.agents_mark_overdue_stale",
            "agents.mark_overdue_stale", "TETHER_JOB_STALE_INTERVAL_SECONDS"),
        Job("pools_rebalance_all", "pools.jobs.pools_rebalance_all",
            "pools.rebalance_all", "TETHER_JOB_REBALANCE_INTERVAL_SECONDS"),
        Job("tasks_place_all", "pools.jobs.tasks_place_all", "pools.place_tasks", "TETHER_JOB_TASKS_INTERVAL_SECONDS"),
        Job("tasks_expire_overdue", "pools.jobs.tasks_expire_overdue",
            "pools.expire_tasks", "TETHER_JOB_TASKS_INTERVAL_SECONDS"),
        Job("tasks_requeue_lost", "pools.jobs.tasks_requeue_lost",
            "pools.requeue_lost_tasks", "TETHER_JOB_TASKS_INTERVAL_SECONDS"),
        Job("assignments_reconcile_cache", "assignments.jobs.assignments_reconcile_cache",
            "assignments.reconcile_cache", "TETHER_JOB_RECONCILE_INTERVAL_SECONDS"),
        Job("usage_rollup_recent", "assignments.jobs.usage_rollup_recent",
            "assignments.rollup_usage", "TETHER_JOB_ROLLUP_INTERVAL_SECONDS"),
        Job("events_archive_old", "assignments.jobs.events_archive_old",
            "assignments.archive_events", "TETHER_JOB_ARCHIVE_INTERVAL_SECONDS"),
        Job("waits_sweep", "assignments.jobs.waits_sweep",
            "assignments.waits_sweep", "TETHER_JOB_WAITS_INTERVAL_SECONDS"),
        Job("wait_cycles_break", "assignments.jobs.wait_cycles_break",
            "assignments.wait_cycles_break", "TETHER_JOB_WAIT_CYCLES_INTERVAL_SECONDS"),
        Job("idempotency_keys_prune", "config.api.idempotency.idempotency_keys_prune_expired",
            "assignments.prune_idempotency_keys", "TETHER_JOB_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS"),
    ]
}


def beat_schedule() -> dict:
    """The one beat schedule: every job at its interval from settings. A message not picked up
    within its interval expires, so a backlog never replays a burst of identical sweeps."""
    return {
        name: {"task": job.task, "schedule": timedelta(seconds=job.interval), "options": {"expires": job.interval}}
        for name, job in JOBS.items()
    }
