"""Celery tasks of the agents app: thin wrappers that run a job (see config/jobs.py)."""

from celery import shared_task

from config.jobs import job_run


@shared_task(name="agents.mark_overdue_stale", ignore_result=True)
def mark_overdue_stale():
    return job_run("agents_mark_overdue_stale")
