"""The production recipe under load: `make serve`, started exactly as the README says, with 64
concurrent agents registering, heartbeating, taking and releasing for a bounded time.

What issue 10 found: under the old recipe (daphne, Django's persistent connections) 32 agents got
60% 503s "too many clients" while the database held 99 of 100 connections, and kept them after the
load stopped. Here: no 5xx, never more connections than `make serve`'s budget, none left working
after the load, the pools shrinking back once idle, and none at all once the server stops.
Loopback only; bounded in time (LOAD_SECONDS) and in count; stops the server itself.
"""

import asyncio
import random
import time

import pytest
from django.conf import settings
from django.db import connection, connections

from assignments.services import profile_create
from config.actors import Actor
from tests.factories import PoolFactory
from tests.serving import Http, db_backends, make_serve, server_env, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]

AGENTS = 64
PROFILES = 96  # more than agents, so takes mostly succeed, and some collide (409s are fine, 5xx not)
LOAD_SECONDS = 12
WORKERS = 2
DB_CONNECTIONS = 12  # make serve's budget for its workers together (small: the server is shared)
MIN_SIZE = 1
OPERATOR = Actor.system("test-serve")


def _backends() -> list[tuple[int, str]]:
    with connection.cursor() as cursor:
        return db_backends(cursor, settings.DATABASES["default"]["NAME"])


async def _agent(i: int, port: int, pool: str, deadline: float, stats: dict) -> None:
    http = Http(port)
    agent_id = f"load-{i}"

    async def call(method, path, body=None, token=None, headers=None):
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Token {token}"
        status, data = await http.request(method, path, body, hdrs)
        stats["status"][status] = stats["status"].get(status, 0) + 1
        if status >= 500:
            stats["errors"].append((method, path, status, data))
        return status, data

    try:
        status, data = await call("POST", "/api/agents/register", {"agent_id": agent_id, "pool": pool, "capacity": 2},
                                  headers={"X-Enrollment-Token": f"enr_{pool}"})
        assert status in (200, 201), (status, data)
        token = data["token"]
        rng = random.Random(i)
        took = False
        # Until the load's end, and in any case until this agent has taken a profile once (bounded:
        # a slow machine must not turn "64 takes within 12 s" into a coin toss, nor hang the test).
        while time.monotonic() < deadline or (not took and time.monotonic() < deadline + LOAD_SECONDS * 4):
            status, _ = await call("POST", f"/api/agents/{agent_id}/heartbeat",
                                   {"load_metrics": {"cpu": rng.randint(0, 100)}, "assignments": []}, token)
            profile_id = f"load-prof-{rng.randrange(PROFILES)}"
            status, data = await call("POST", "/api/assignments", {"profile_id": profile_id, "agent_id": agent_id},
                                      token)
            stats["attempts"].add(agent_id)
            if status == 201:
                took = True
                stats["takes"] += 1
                assignment_id = data["assignment_id"]
                await call("POST", f"/api/agents/{agent_id}/heartbeat",
                           {"load_metrics": {"cpu": 50}, "assignments": [assignment_id]}, token)
                status, _ = await call("DELETE", f"/api/assignments/{assignment_id}", None, token)
                if status == 200:
                    stats["releases"] += 1
    except Exception as exc:  # noqa: BLE001 — a dropped connection or a timeout is a failure too
        stats["errors"].append((agent_id, repr(exc)))
    finally:
        await http.close()


async def _load(port: int, pool: str) -> tuple[dict, int]:
    stats = {"status": {}, "errors": [], "takes": 0, "releases": 0, "attempts": set()}
    deadline = time.monotonic() + LOAD_SECONDS
    agents = asyncio.gather(*(_agent(i, port, pool, deadline, stats) for i in range(AGENTS)))
    peak = 0
    loop = asyncio.get_running_loop()
    while not agents.done():
        # Sampled all along, from a thread: the count must stay within the budget at every moment.
        peak = max(peak, len(await loop.run_in_executor(None, _sampled_backends)))
        await asyncio.wait([agents], timeout=0.25)
    await agents
    return stats, peak


def _sampled_backends():
    try:
        return _backends()
    finally:
        connections.close_all()


def test_make_serve_holds_a_bounded_number_of_connections_under_64_agents():
    pool = PoolFactory()
    for i in range(PROFILES):
        profile_create(profile_id=f"load-prof-{i}", actor=OPERATOR)
    server = make_serve(server_env(settings, TETHER_DB_POOL_MIN_SIZE=MIN_SIZE, TETHER_DB_POOL_MAX_IDLE=1),
                        workers=WORKERS, db_connections=DB_CONNECTIONS)
    try:
        stats, peak = asyncio.run(_load(server.port, pool.name))
        assert not stats["errors"], (stats["errors"][:5], server.log_tail())
        assert all(status < 500 for status in stats["status"]), stats["status"]
        # Every agent registered, heartbeated and took a profile at least once (however slow the
        # machine: each goes on past the 12 s until it has), and every take was released.
        assert len(stats["attempts"]) == AGENTS, sorted(stats["attempts"])
        assert stats["takes"] >= AGENTS and stats["releases"] == stats["takes"], stats
        assert 0 < peak <= DB_CONNECTIONS, f"{peak} connections at the peak, budget {DB_CONNECTIONS}"

        # Load over: nothing left working, and the pools give back what they opened beyond the
        # minimum (one connection per TETHER_DB_POOL_MAX_IDLE second and process).
        settled = wait_until(lambda: (lambda b: b if len(b) <= WORKERS * MIN_SIZE else None)(_backends()),
                             timeout=DB_CONNECTIONS * 2 + 10)
        assert settled is not None, f"still held after the load: {_backends()}"
        assert all(state == "idle" for _, state in settled), settled
    finally:
        server.stop()
    assert wait_until(lambda: not _backends(), timeout=10), f"left behind by the stopped server: {_backends()}"


def test_agents_long_polling_for_tasks_keep_no_other_request_waiting():
    """`make serve` with one request thread (TETHER_HTTP_THREADS=1): three agents long-poll for
    tasks, and while they wait a fourth registers, heartbeats and reads itself — on that one thread,
    the long-polls being on threads of their own (config/wsgi_threads.py). Each claim answers when its
    wait ends, with nothing to do."""
    pool = PoolFactory()
    server = make_serve(server_env(settings, TETHER_HTTP_THREADS=1, TETHER_DB_POOL_MIN_SIZE=1), workers=1,
                        db_connections=4)

    async def scenario():
        clients = [Http(server.port) for _ in range(4)]
        tokens = []
        try:
            for i in range(3):
                status, data = await clients[i].request(
                    "POST", "/api/agents/register", {"agent_id": f"poller-{i}", "pool": pool.name},
                    {"X-Enrollment-Token": f"enr_{pool.name}"})
                assert status == 201, (status, data)
                tokens.append(data["token"])
            claims = [asyncio.create_task(clients[i].request(
                "POST", f"/api/agents/poller-{i}/tasks/claim", {"wait_seconds": 6},
                {"Authorization": f"Token {tokens[i]}"})) for i in range(3)]
            await asyncio.sleep(0.5)  # the three are asleep in their long-polls
            other = clients[3]
            status, data = await other.request("POST", "/api/agents/register", {"agent_id": "other", "pool": pool.name},
                                               {"X-Enrollment-Token": f"enr_{pool.name}"})
            assert status == 201, (status, data)
            auth = {"Authorization": f"Token {data['token']}"}
            status, _ = await other.request("POST", "/api/agents/other/heartbeat", {"assignments": []}, auth)
            assert status == 200
            status, data = await other.request("GET", "/api/agents/other", None, auth)
            assert status == 200 and data["agent_id"] == "other"
            waiting = [not claim.done() for claim in claims]
            answers = await asyncio.gather(*claims)
            return waiting, answers
        finally:
            for client in clients:
                await client.close()

    try:
        waiting, answers = asyncio.run(scenario())
    finally:
        server.stop()
    assert waiting == [True, True, True], "the other agent was answered only after the long-polls"
    assert answers == [(200, {"tasks": []})] * 3, answers
