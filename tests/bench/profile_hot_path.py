"""Profile one request loop of each agent-facing hot path in process (not collected by pytest):
take→release (plain, idempotent, handed over to a waiter, by requirements), heartbeat, register (again
and new), a task's submit → claim → complete, get agent, discover — through Django's test client (the
whole middleware and DRF stack, no server), on a scratch database `<DATABASE_URL's name>_profile`, with
Redis when REDIS_URL is set. Prints CPU ms, SQL statements and ORM compiles per request (after-commit
work included), with `SHOW_SQL=NAME` that loop's statements and compiles, and with `--profile NAME`
its cProfile.

    python tests/bench/profile_hot_path.py [--n 300] [--profile take_release|heartbeat|...]
"""

import argparse
import cProfile
import itertools
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench._harness import django_on, scratch_database  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--profile", default="")
    parser.add_argument("--agents", type=int, default=2000, help="agents in the discover pool")
    parser.add_argument("--only", default="", help="comma-separated loop names (default: all)")
    args = parser.parse_args()
    name = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tether").rsplit("/", 1)[1]
    django_on(scratch_database(f"{name}_profile"), key_prefix="profile")

    from django.db import connection
    from django.test import Client

    from agents.services import agent_register
    from config.actors import Actor
    from pools.services import pool_create
    from tests.helpers import orm_compiles

    system = Actor.system("profile")
    pool, enrollment = pool_create(name="prof", actor=system)
    client = Client(SERVER_NAME="127.0.0.1")

    def call(method, path, body=None, token=None, headers=None):
        extra = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
        extra.update(headers or {})
        data = json.dumps(body) if body is not None else ""
        response = client.generic(method, path, data, content_type="application/json", **extra)
        assert response.status_code < 300, (method, path, response.status_code, response.content[:300])
        return response.json() if response.content else None

    body = call("POST", "/api/agents/register", {"agent_id": "w1", "pool": "prof", "capacity": 4},
                headers={"HTTP_X_ENROLLMENT_TOKEN": enrollment})
    token = body["token"]
    from assignments.services import profile_create

    profile_create(profile_id="p1", pool="prof", actor=system)
    profile_create(profile_id="p2", pool="prof", actor=system)
    for i in range(args.agents):
        agent_register(pool=pool, agent_id=f"d{i}", actor=system, capabilities=["chrome"] if i % 3 else ["firefox"],
                       region="eu" if i % 2 else "us")
    held = call("POST", "/api/assignments", {"profile_id": "p1"}, token=token)["assignment_id"]
    call("DELETE", f"/api/assignments/{held}", token=token)

    # As `make serve`'s workers run (config/serve.py): the setup's garbage collected (the scratch
    # database's migrations leave thousands of rendered model classes), the startup heap frozen.
    from config.serve import tune_garbage_collector

    t = time.perf_counter()
    tune_garbage_collector()
    print(f"setup's garbage collected and the heap frozen in {time.perf_counter() - t:.2f} s", flush=True)

    def take_release():
        a = call("POST", "/api/assignments", {"profile_id": "p1"}, token=token)
        call("DELETE", f"/api/assignments/{a['assignment_id']}", token=token)

    keys = iter(range(10**9))

    def take_release_idempotent():
        a = call("POST", "/api/assignments", {"profile_id": "p1"}, token=token,
                 headers={"HTTP_IDEMPOTENCY_KEY": f"k-{next(keys)}"})
        call("DELETE", f"/api/assignments/{a['assignment_id']}", token=token)

    token2 = call("POST", "/api/agents/register", {"agent_id": "w2", "pool": "prof", "capacity": 4},
                  headers={"HTTP_X_ENROLLMENT_TOKEN": enrollment})["token"]
    holder = {"token": token, "id": call("POST", "/api/assignments", {"profile_id": "p2"}, token=token)["assignment_id"]}
    waiter_token = itertools.cycle([token2, token])

    def wait_hand_over():
        # The other agent waits for the profile this one holds (202 pending), this one releases: the
        # release hands it over (issue 12's contended path); the waiter is the next holder.
        waiting = next(waiter_token)
        pending = call("POST", "/api/assignments", {"profile_id": "p2", "wait_seconds": 30}, token=waiting)
        assert pending["status"] == "pending", pending
        call("DELETE", f"/api/assignments/{holder['id']}", token=holder["token"])
        holder.update(token=waiting, id=pending["assignment_id"])

    def select_release():
        # A take by requirements (issue 12's selection: the free profile released longest ago).
        a = call("POST", "/api/assignments", {"profile_requirements": {"pool": "prof"}}, token=token)
        call("DELETE", f"/api/assignments/{a['assignment_id']}", token=token)

    def heartbeat():
        # As an agent sends it (and as make bench's): it reports what it holds. (Reporting nothing
        # while it holds p2 made every one of these raise and dedupe an `assignment_lost` alert.)
        held = [holder["id"]] if holder["token"] == token else []
        call("POST", "/api/agents/w1/heartbeat", {"load_metrics": {"cpu": 20}, "assignments": held}, token=token)

    def register():
        call("POST", "/api/agents/register", {"agent_id": "r1", "pool": "prof", "capacity": 2},
             headers={"HTTP_X_ENROLLMENT_TOKEN": enrollment})

    fresh = iter(range(10**9))

    def register_new():
        # A first registration (make bench-coordinator's register phase: a new agent each request).
        call("POST", "/api/agents/register", {"agent_id": f"n{next(fresh)}", "pool": "prof", "capacity": 2},
             headers={"HTTP_X_ENROLLMENT_TOKEN": enrollment})

    # A pool of its own for tasks: the discover pool's 2,000 agents would be handed them.
    _, task_enrollment = pool_create(name="tq", actor=system)
    task_token = call("POST", "/api/agents/register", {"agent_id": "t1", "pool": "tq", "capacity": 4},
                      headers={"HTTP_X_ENROLLMENT_TOKEN": task_enrollment})["token"]

    def task_cycle():
        # A task's life as an agent sees it (issue 11's queue): submitted, claimed, completed.
        call("POST", "/api/tasks", {"pool": "tq", "payload": {"url": "https://example.test"}}, token=task_token)
        claimed = call("POST", "/api/agents/t1/tasks/claim", {"max": 1}, token=task_token)["tasks"]
        assert claimed, "the task just submitted was not handed out"
        call("POST", f"/api/tasks/{claimed[0]['task_id']}/complete", {"attempt": claimed[0]["attempt"],
                                                                     "result": {"ok": True}}, token=task_token)

    def get_agent():
        call("GET", "/api/agents/w1", token=token)

    def discover():
        call("POST", "/api/agents/discover", {"capabilities": ["chrome"], "region": "eu", "pool": "prof"}, token=token)

    loops = {"take_release": (take_release, 2), "take_release_idempotent": (take_release_idempotent, 2),
             "wait_hand_over": (wait_hand_over, 2), "select_release": (select_release, 2), "heartbeat": (heartbeat, 1), "register": (register, 1),
             "register_new": (register_new, 1), "task_cycle": (task_cycle, 3),
             "get_agent": (get_agent, 1), "discover": (discover, 1)}
    for label, (fn, requests) in loops.items():
        if args.only and label not in args.only.split(","):
            continue
        n = max(10, args.n // (20 if label == "discover" else 1))
        for _ in range(5):
            fn()  # warm up
        statements = []

        def count(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        # What the ORM compiled (config/sql.py keeps the hot statements built once).
        with orm_compiles() as compiled, connection.execute_wrapper(count):
            fn()
        profiler = cProfile.Profile(time.thread_time) if args.profile == label else None
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for _ in range(n):
            fn()
        if profiler:
            profiler.disable()
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        print(f"{label:24s} {cpu / n / requests * 1000:6.2f} ms CPU/request  {wall / n / requests * 1000:6.2f} ms wall"
              f"  {len(statements) / requests:4.1f} SQL/request  {len(compiled) / requests:4.1f} compiled", flush=True)
        if profiler:
            if os.environ.get("PROFILE_OUT"):
                profiler.dump_stats(os.environ["PROFILE_OUT"])
            stats = pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative"))
            stats.print_stats(45)
        if os.environ.get("SHOW_SQL") == label:
            for sql in statements:
                print("   ", sql[:300])
            for sql_and_params in compiled:  # (sql, params), or a list of them (an INSERT's)
                first = sql_and_params[0] if isinstance(sql_and_params, list) else sql_and_params
                print("    compiled:", first[0][:300])


if __name__ == "__main__":
    main()
