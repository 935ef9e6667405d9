"""Embedded mode (no broker: TETHER_EMBEDDED_JOBS): the beat's jobs run inside the web process.

Why here and not in a Celery worker: on the in-memory broker a separate worker process would never
receive the beat's messages, and the in-memory channel layer reaches only the process it lives in —
so a job's events (a failover, an expiry) would never reach the pages. Instead, the ASGI app starts
one asyncio task on the server's own event loop at its first connection (daphne has no lifespan
events; `make run` asks for /health at start-up so it begins at once). The task runs each job of
`config.jobs.JOBS` at its interval, in a worker thread (`sync_to_async`, not thread-sensitive, so
requests are never blocked behind a job); the events those jobs publish after commit go through
`async_to_sync`, which hands them back to this same loop — where the in-memory layer's subscribers
live. The jobs are the same services Celery runs, so they stay idempotent and safe even if two such
processes ran.
"""

import asyncio
import logging
import threading
import time

from asgiref.sync import sync_to_async
from django.db import connections

from config.jobs import JOBS, job_run

log = logging.getLogger("tether.jobs")

_task: asyncio.Task | None = None
TICK_SECONDS = 0.5
# Set while no job is running: cancelling the loop does not stop a job already in its thread, so
# whoever stops the loop (a test, a shutdown) can wait for that one to finish.
idle = threading.Event()
idle.set()


def _run(name: str) -> None:
    idle.clear()
    try:
        job_run(name)
    except Exception:  # noqa: BLE001 — recorded by job_run (health shows it); the next tick retries
        log.exception("embedded job %s failed", name)
    finally:
        # Each run may land on another thread of the pool: leave no connection behind.
        connections.close_all()
        idle.set()


async def run_jobs_forever() -> None:
    log.info("embedded jobs: running %s in the web process", ", ".join(JOBS))
    next_due = dict.fromkeys(JOBS, 0.0)
    while True:
        for name, job in JOBS.items():
            now = time.monotonic()
            if now >= next_due[name]:
                next_due[name] = now + job.interval
                await sync_to_async(_run, thread_sensitive=False)(name)
        await asyncio.sleep(TICK_SECONDS)


def ensure_started() -> None:
    """Start the job loop on the running event loop, once."""
    global _task
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(run_jobs_forever(), name="tether-embedded-jobs")


def with_embedded_jobs(application):
    """Wrap an ASGI application so that its first connection starts the job loop."""

    async def app(scope, receive, send):
        ensure_started()
        return await application(scope, receive, send)

    return app
