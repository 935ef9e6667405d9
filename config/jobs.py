"""Running the background jobs (the table is config/schedule.py): `job_run` runs one as the system
actor `job:<name>` and records when it ran and what it did (`JobRun`), which `GET /health` reports
through `job_status`."""

import logging
import time

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from assignments.models import JobRun
from config.actors import Actor
from config.schedule import JOBS, Job, beat_schedule

__all__ = ["JOBS", "Job", "beat_schedule", "job_run", "job_status"]

log = logging.getLogger("tether.jobs")


def _service(job: Job):
    # Resolved by its dotted path when it runs: the table is plain data (see config/schedule.py).
    return import_string(job.service)


# Result counts that say how much was looked at, not that something changed.
_NOT_CHANGES = {"checked", "hours", "rows", "pools", "ms"}


def job_run(name: str, *, now=None, limit: int | None = None) -> dict:
    """Run one job once as the system actor `job:<name>`, and record the run. A failure is recorded
    and raised (Celery logs it; the next beat tries again)."""
    job = JOBS[name]
    started = timezone.now()
    clock = time.perf_counter()
    try:
        result = _service(job)(actor=Actor.system(name), now=now, limit=limit or settings.TETHER_JOB_BATCH_SIZE)
    except Exception as exc:
        _record(name, started, ok=False, result={}, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    result = dict(result or {})
    _record(name, started, ok=True, result=result | {"ms": round((time.perf_counter() - clock) * 1000, 1)})
    changed = any(v for k, v in result.items() if k not in _NOT_CHANGES and isinstance(v, int))
    log.log(logging.INFO if changed else logging.DEBUG, "job %s: %s", name, result)
    return result


def _record(name: str, started, *, ok: bool, result: dict, error: str = "") -> None:
    if connection.in_atomic_block and connection.needs_rollback:
        return
    fields = {
        "last_started_at": started,
        "last_finished_at": timezone.now(),
        "last_ok": ok,
        "last_result": result,
        "last_error": error,
    }
    try:
        # Not a domain change (no event): the runner's own bookkeeping, one row per job.
        if not JobRun.objects.filter(name=name).update(runs=F("runs") + 1, **fields):
            JobRun.objects.bulk_create([JobRun(name=name, runs=1, **fields)], ignore_conflicts=True)
    except Exception:  # noqa: BLE001 — bookkeeping must not turn a job's success into a failure
        log.warning("could not record the run of job %s", name, exc_info=True)


def job_status(now=None) -> dict:
    """For `GET /health`: when each job last ran, and whether that is overdue (3 intervals + 30 s)."""
    now = now or timezone.now()
    runs = {run.name: run for run in JobRun.objects.filter(name__in=list(JOBS))}
    status = {}
    for name, job in JOBS.items():
        run = runs.get(name)
        if run is None or run.last_finished_at is None:
            status[name] = {"last_run": None, "age_seconds": None, "interval_seconds": job.interval, "ok": None,
                            "overdue": True}
            continue
        age = (now - run.last_finished_at).total_seconds()
        status[name] = {
            "last_run": run.last_finished_at.isoformat().replace("+00:00", "Z"),
            "age_seconds": round(age, 1),
            "interval_seconds": job.interval,
            "ok": run.last_ok,
            "overdue": age > 3 * job.interval + 30,
            "result": run.last_result,
        } | ({"error": run.last_error} if run.last_error else {})
    return status
