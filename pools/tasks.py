"""Celery tasks of the pools app: thin wrappers that run a job (see config/jobs.py)."""

from celery import shared_task

from config.jobs import job_run


@shared_task(name="pools.rebalance_all", ignore_result=True)
def rebalance_all():
    return job_run("pools_rebalance_all")
