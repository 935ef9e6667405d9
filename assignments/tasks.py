"""Celery tasks of the assignments app: thin wrappers that run a job (see config/jobs.py)."""

from celery import shared_task

from config.jobs import job_run


@shared_task(name="assignments.expire_idle", ignore_result=True)
def expire_idle():
    return job_run("assignments_expire_idle")


@shared_task(name="assignments.reconcile_cache", ignore_result=True)
def reconcile_cache():
    return job_run("assignments_reconcile_cache")


@shared_task(name="assignments.rollup_usage", ignore_result=True)
def rollup_usage():
    return job_run("usage_rollup_recent")


@shared_task(name="assignments.archive_events", ignore_result=True)
def archive_events():
    return job_run("events_archive_old")


@shared_task(name="assignments.prune_idempotency_keys", ignore_result=True)
def prune_idempotency_keys():
    return job_run("idempotency_keys_prune")


@shared_task(name="assignments.waits_sweep", ignore_result=True)
def waits_sweep():
    return job_run("waits_sweep")


@shared_task(name="assignments.wait_cycles_break", ignore_result=True)
def wait_cycles_break():
    return job_run("wait_cycles_break")
