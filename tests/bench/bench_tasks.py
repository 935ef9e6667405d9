"""`make bench-tasks`: task distribution end to end over HTTP, and the dispatcher alone.

1. End to end (the real ASGI server, as `make bench` starts it: uvicorn, pooled PostgreSQL
   connections, Redis): 16 agents register, then long-poll `POST /api/agents/{id}/tasks/claim`
   while 2,000 tasks across the five priorities are batch-submitted (`POST /api/tasks/batch`, 500 a
   request); each agent completes what it gets (`POST /api/tasks/{id}/complete`, which implies the
   start) and claims again, until every task is completed. Reports tasks/s from the first submit to
   the last completion, and submit → assigned latency p50/p99 (from the tasks' own timestamps).
2. The dispatcher alone (in this process, no HTTP): 2,000 queued tasks placed on 16 agents with
   room for all of them by `pools.dispatch.tasks_place` — tasks placed per second.

Not a test: speed is measured here, never asserted in the suite. Targets (issue 11): ≥ 100 tasks/s
end to end, ≥ 2,000 tasks/s placed by the dispatcher, on the 2-CPU reference machine.

Environment: DATABASE_URL (PostgreSQL; the bench uses its own database `<name>_taskbench`, emptied
here), REDIS_URL, BENCH_PORT (default 8102), BENCH_WORKERS (uvicorn workers, default 2),
BENCH_TASKS (default 2000), BENCH_AGENTS (default 16), BENCH_TASK_CAPACITY (tasks per agent, default 4).
"""

import asyncio
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCH_PORT", "8102")


def _taskbench_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("make bench-tasks needs PostgreSQL: set DATABASE_URL=postgres://... (it uses <name>_taskbench)")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_taskbench"))


# The HTTP client, server start/stop and database preparation of `make bench`, on a database of ours.
os.environ["BENCH_DATABASE_URL"] = _taskbench_url()
from tests.bench import api_bench as bench  # noqa: E402

TASKS = int(os.environ.get("BENCH_TASKS", "2000"))
AGENTS = int(os.environ.get("BENCH_AGENTS", "16"))
CAPACITY = int(os.environ.get("BENCH_TASK_CAPACITY", "4"))
BATCH = 500
PRIORITIES = ["urgent", "critical", "high", "normal", "low"]
DEADLINE_SECONDS = 300  # the end-to-end phase gives up after this


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def end_to_end(operator: str) -> dict:
    http = bench.Http()
    status, body = await http.request("POST", "/api/pools", {"name": "taskbench", "platform": "bare",
                                                              "task_capacity": CAPACITY}, token=operator)
    assert status == 201, (status, body)
    enrollment = body["enrollment_token"]
    tokens = []
    for a in range(AGENTS):
        status, body = await http.request("POST", "/api/agents/register",
                                          {"agent_id": f"tb-{a}", "pool": "taskbench", "capabilities": ["chrome"]},
                                          headers={"X-Enrollment-Token": enrollment})
        assert status == 201, (status, body)
        tokens.append(body["token"])
    await http.close()

    completed, errors = [0], {}
    started = [None]
    finished = asyncio.Event()

    def error(what):
        errors[what] = errors.get(what, 0) + 1

    async def agent(a: int):
        client, token = bench.Http(), tokens[a]
        while not finished.is_set():
            status, body = await client.request("POST", f"/api/agents/tb-{a}/tasks/claim",
                                                {"max": CAPACITY, "wait_seconds": 2}, token=token)
            if status != 200:
                error(f"claim {status}")
                await asyncio.sleep(0.1)
                continue
            for task in body["tasks"]:
                status, _ = await client.request("POST", f"/api/tasks/{task['task_id']}/complete",
                                                 {"attempt": task["attempt"], "result": {"ok": True}}, token=token)
                if status == 200:
                    completed[0] += 1
                    if completed[0] >= TASKS:
                        finished.set()
                else:
                    error(f"complete {status}")
        await client.close()

    async def submitter():
        client = bench.Http()
        started[0] = time.perf_counter()
        for first in range(0, TASKS, BATCH):
            tasks = [{"pool": "taskbench", "task_id": f"tb-task-{i}", "priority": PRIORITIES[i % 5],
                      "payload": {"n": i}, "requirements": {"capabilities": ["chrome"]}}
                     for i in range(first, min(TASKS, first + BATCH))]
            status, body = await client.request("POST", "/api/tasks/batch", {"tasks": tasks}, token=operator)
            if status != 201:
                error(f"batch {status}")
        await client.close()

    async def watchdog():
        try:
            await asyncio.wait_for(finished.wait(), DEADLINE_SECONDS)
        except asyncio.TimeoutError:
            error("deadline")
            finished.set()

    workers = [asyncio.create_task(agent(a)) for a in range(AGENTS)]
    await asyncio.sleep(0.5)  # the agents are long-polling before the first task exists
    await asyncio.gather(submitter(), watchdog())
    elapsed = time.perf_counter() - started[0]
    await asyncio.gather(*workers)
    return {"completed": completed[0], "seconds": elapsed, "errors": errors}


def latencies() -> list[float]:
    import psycopg

    with psycopg.connect(bench._conninfo(bench.DB_URL), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM assigned_at - submitted_at) FROM pools_task "
            "WHERE task_id LIKE 'tb-task-%%' AND assigned_at IS NOT NULL"
        ).fetchall()
    return [float(r[0]) for r in rows]


def dispatcher_alone(env: dict) -> dict:
    """`tasks_place` alone, in this process, on the same database (emptied first)."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")})
    os.environ["TETHER_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.test.utils import override_settings

    from agents.services import agent_register
    from config.actors import Actor
    from pools.dispatch import tasks_place
    from pools.models import Task
    from pools.queue import task_submit_batch
    from pools.services import pool_create

    actor = Actor.system("bench")
    # Placement only: the after-commit consumers (cache, publishing, dispatch) are not measured.
    with override_settings(TETHER_EVENT_CONSUMERS=[]):
        pool, _ = pool_create(name="dispatchbench", actor=actor, task_capacity=TASKS)
        for a in range(AGENTS):
            agent_register(pool=pool, agent_id=f"db-{a}", actor=actor, capabilities=["chrome"])
        for first in range(0, TASKS, BATCH):
            task_submit_batch(actor=actor, tasks=[
                {"pool": "dispatchbench", "priority": PRIORITIES[i % 5], "requirements": {"capabilities": ["chrome"]}}
                for i in range(first, min(TASKS, first + BATCH))
            ])
        started = time.perf_counter()
        placed = 0
        while True:
            n = len(tasks_place(pool=pool, actor=actor, limit=BATCH))
            placed += n
            if n == 0:
                break
        elapsed = time.perf_counter() - started
    queued = Task.objects.filter(pool=pool, status="queued").count()
    return {"placed": placed, "seconds": elapsed, "left_queued": queued}


def main() -> None:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": bench.DB_URL,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": env.get("SECRET_KEY") or bench.secrets.token_urlsafe(50),
        "TETHER_DB_POOL": "1",
        "TETHER_DB_POOL_MIN_SIZE": env.get("TETHER_DB_POOL_MIN_SIZE", "4"),
        "TETHER_DB_POOL_MAX_SIZE": env.get("TETHER_DB_POOL_MAX_SIZE", "16"),
        "TETHER_LOG_LEVEL": "WARNING",
        # The agents' long-polls look again this often.
        "TETHER_TASK_CLAIM_POLL_SECONDS": env.get("TETHER_TASK_CLAIM_POLL_SECONDS", "0.2"),
    })
    if not env.get("REDIS_URL"):
        sys.exit("make bench-tasks needs Redis too: set REDIS_URL")
    print(f"machine: {bench.machine()}")
    print(f"server: uvicorn, {bench.WORKERS} workers, http://{bench.HOST}:{bench.PORT}, database {bench.DB_NAME}")
    print(f"{TASKS} tasks, {AGENTS} agents, task_capacity {CAPACITY}")
    bench.prepare_database(env)
    operator = bench.make_operator(env)
    server = bench.start_server(env)
    try:
        e2e = asyncio.run(end_to_end(operator))
    finally:
        bench.stop_server(server)
    waits = latencies()
    bench.prepare_database(env)
    alone = dispatcher_alone(env)

    rate = e2e["completed"] / e2e["seconds"] if e2e["seconds"] else 0.0
    p50, p99 = _percentile(waits, 0.5), _percentile(waits, 0.99)
    place_rate = alone["placed"] / alone["seconds"] if alone["seconds"] else 0.0
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| end to end: tasks completed | {e2e['completed']} of {TASKS} in {e2e['seconds']:.2f} s | |")
    print(f"| end to end: tasks/s | {rate:.1f} | ≥ 100 |")
    print(f"| submit → assigned p50 | {p50 * 1000:.0f} ms |  |" if p50 is not None else "| submit → assigned p50 | - | |")
    print(f"| submit → assigned p99 | {p99 * 1000:.0f} ms |  |" if p99 is not None else "| submit → assigned p99 | - | |")
    print(f"| dispatcher alone: tasks placed/s | {place_rate:.0f} ({alone['placed']} in {alone['seconds']:.2f} s) | ≥ 2,000 |")
    if e2e["errors"]:
        print(f"errors: {e2e['errors']}")
    if e2e["errors"] or e2e["completed"] < TASKS or alone["left_queued"]:
        sys.exit("the run did not finish cleanly (see above)")


if __name__ == "__main__":
    main()
