"""Celery tasks of the pools app: thin wrappers that run a job (see config/jobs.py)."""

from celery import shared_task

from config.jobs import job_run


@shared_task(name="pools.rebalance_all", ignore_result=True)
def rebalance_all():
    return job_run("pools_rebalance_all")


@shared_task(name="pools.place_tasks", ignore_result=True)
def place_tasks():
    return job_run("tasks_place_all")


@shared_task(name="pools.expire_tasks", ignore_result=True)
def expire_tasks():
    return job_run("tasks_expire_overdue")


@shared_task(name="pools.requeue_lost_tasks", ignore_result=True)
def requeue_lost_tasks():
    return job_run("tasks_requeue_lost")
