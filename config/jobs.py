"""The background jobs: which service each one runs, how often, and the runner that records when
each last ran (`GET /health` reports it).

A job is a service function (in its app's `services.py`) taking `actor`, `now` and `limit` and
returning a small dict of counts. It is idempotent, bounded by `limit`, and safe on several workers
at once. Two things run them, both through `job_run`:
- Celery: the thin tasks in each app's `tasks.py`, on the beat schedule built in `config/celery.py`;
- embedded mode (no broker, TETHER_EMBEDDED_JOBS): `config.embedded_jobs`, inside the web process.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

log = logging.getLogger("tether.jobs")


@dataclass(frozen=True)
class Job:
    name: str
    service: str  # dotted path of the service function
    task: str  # the Celery task's name
    interval_setting: str

    @property
    def interval(self) -> float:
        return float(getattr(settings, self.interval_setting))


JOBS: dict[str, Job] = {
    job.name: job
    for job in [
        Job("assignments_expire_idle", "assignments.services.assignments_expire_idle",
            "assignments.expire_idle", "TETHER_JOB_EXPIRY_INTERVAL_SECONDS"),
        Job("agents_mark_overdue_stale", "agents.services.agents_mark_overdue_stale",
            "agents.mark_overdue_stale", "TETHER_JOB_STALE_INTERVAL_SECONDS"),
        Job("pools_rebalance_all", "pools.services.pools_rebalance_all",
            "pools.rebalance_all", "TETHER_JOB_REBALANCE_INTERVAL_SECONDS"),
        Job("assignments_reconcile_cache", "assignments.services.assignments_reconcile_cache",
            "assignments.reconcile_cache", "TETHER_JOB_RECONCILE_INTERVAL_SECONDS"),
        Job("usage_rollup_recent", "assignments.services.usage_rollup_recent",
            "assignments.rollup_usage", "TETHER_JOB_ROLLUP_INTERVAL_SECONDS"),
        Job("events_archive_old", "assignments.services.events_archive_old",
            "assignments.archive_events", "TETHER_JOB_ARCHIVE_INTERVAL_SECONDS"),
        Job("idempotency_keys_prune", "config.api.idempotency.idempotency_keys_prune_expired",
            "assignments.prune_idempotency_keys", "TETHER_JOB_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS"),
    ]
}


def _service(job: Job):
    module, _, name = job.service.rpartition(".")
    return getattr(import_module(module), name)


# Result counts that say how much was looked at, not that something changed.
_NOT_CHANGES = {"checked", "hours", "rows", "pools", "ms"}


def job_run(name: str, *, now=None, limit: int | None = None) -> dict:
    """Run one job once as the system actor `job:<name>`, and record the run. A failure is recorded
    and raised (Celery logs it; the next beat tries again)."""
    from assignments.actors import Actor

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
    from assignments.models import JobRun

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
    from assignments.models import JobRun

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


def beat_schedule() -> dict:
    """The one beat schedule: every job at its interval from settings. A message not picked up
    within its interval expires, so a backlog never replays a burst of identical sweeps."""
    return {
        name: {"task": job.task, "schedule": timedelta(seconds=job.interval), "options": {"expires": job.interval}}
        for name, job in JOBS.items()
    }


def older_than_pool_timeout(queryset, *, since_field: str, timeout_field: str, now):
    """The rows of `queryset` (of a model with a `pool`) whose `since_field` is older than `now`
    minus their pool's `timeout_field` (seconds). One query on PostgreSQL (interval arithmetic in
    SQL); SQLite cannot multiply an interval, so there (embedded mode, a few pools) it is a
    condition per pool."""
    from django.db.models import DateTimeField, ExpressionWrapper, Q, Value

    from pools.models import AgentPool

    if connection.vendor == "postgresql":
        deadline = ExpressionWrapper(
            F(since_field) + F(f"pool__{timeout_field}") * Value(timedelta(seconds=1)), output_field=DateTimeField()
        )
        return queryset.annotate(_deadline=deadline).filter(_deadline__lt=now)
    condition = Q(pk__in=[])
    for pool_id, seconds in AgentPool.objects.values_list("pk", timeout_field):
        condition |= Q(pool_id=pool_id, **{f"{since_field}__lt": now - timedelta(seconds=seconds)})
    return queryset.filter(condition)
