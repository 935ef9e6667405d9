"""`make bench`: the REST API's hot paths over real HTTP, against the same work as raw SQL.

Starts the production server as the README says (`make serve`: uvicorn, pooled PostgreSQL, Redis) on loopback, registers
128 agents and 256 profiles through the API, then measures, with the load generator split over
several processes (BENCH_LOADGEN_PROCESSES, default 4, so the client is not the bottleneck):

- take → release cycles (POST /api/assignments, DELETE /api/assignments/{id}) at concurrency 1, 8,
  32 and 128 (closed loop: each client sends its next request as soon as the last is answered);
- heartbeats at the same concurrencies, each agent reporting the two assignments it holds;
- the same heartbeats paced as a fleet sends them (open loop: 32 agents, 1 a second each by
  default, BENCH_PACED_RATE), and a steady fleet of 32 agents each doing one take → release a
  second: the latency an agent sees, p50/p99;
- the server's CPU time per request in each phase (all its processes, from /proc);

and the same transactions as raw SQL through psycopg (the floor: same locks, checks, updates and
event rows, numbered by the same commit-time trigger), with the ratio. Then conflict resolution
(issue 12), with no SQL floor:

- contention: 32 agents contending for 8 profiles with `wait_seconds` — each takes one (201, or 202
  and it waits), holds it 10 ms, releases it; the hand-over latency is release → next waiter active:
  the release's own round trip (the hand-over commits with it), and what the waiter sees: release
  sent → the `pending → active` event on its own WebSocket (`agent_id=` filter, as the SDK waits);
  then the same with each profile held 1 s (the closed loop with 10 ms holds saturates the server,
  so its latency is queueing; a second's hold is closer to agents that use what they take);
- selection: 64 concurrent takes by `profile_requirements` (all must get distinct profiles).

Bounded in count and time; stops the server itself. Not a test: speed is measured here, never
asserted in the suite.

BENCH_SOAK_SECONDS (default 0; `make bench-soak` sets 300) adds a soak: the 32-agent take → release
fleet runs that long at full speed while a reader polls `GET /api/events?since=<its last seq>` and
checks invariant 4 the whole time — every event once, in seq order, no hole — and at the end that
it saw exactly what the log holds.

Environment: DATABASE_URL (PostgreSQL; the bench uses its own database `<name>_bench`, made and
emptied here), REDIS_URL, BENCH_PORT (default 8101), BENCH_WORKERS (uvicorn workers, default 2),
BENCH_SCALE (multiplies the request counts, default 1), BENCH_CONCURRENCY (default "1,8,32,128"),
BENCH_ONLY=conflicts (only the conflict resolution phases: no raw SQL pool, few connections — for
checking the harness on a busy machine).
"""

import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
HOST = "127.0.0.1"
PORT = int(os.environ.get("BENCH_PORT", "8101"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
AGENTS, PROFILES = 128, 256
FLEET = 32  # agents in the paced (open-loop) phases
PHASE_SECONDS = 60  # no phase runs longer than this, whatever the count
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,8,32,128").split(",")]
CYCLES = {c: max(c, int(min(200 + 50 * c, 3200) * SCALE)) for c in CONCURRENCY}
HEARTBEATS = {c: max(c, int(min(400 + 60 * c, 4000) * SCALE)) for c in CONCURRENCY}
LOADGEN_PROCESSES = int(os.environ.get("BENCH_LOADGEN_PROCESSES", "4"))
SOAK_SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "0"))
ONLY = os.environ.get("BENCH_ONLY", "")
CONTENDED = 8  # profiles the 32 agents contend for
CONTENTION_ROUNDS = max(2, int(20 * SCALE))  # takes per agent
HOLD_SECONDS = 0.010
# The same contention as agents using what they take: each holds its profile a second (4 agents wait
# for each profile), so the server is not saturated and the hand-over latency is not queueing.
HELD_HOLD_SECONDS, HELD_ROUNDS = 1.0, max(2, int(6 * SCALE))
SELECTIONS, SELECTION_ROUNDS = 64, max(1, int(5 * SCALE))


def _bench_database_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("make bench needs PostgreSQL: set DATABASE_URL=postgres://... (the bench uses <name>_bench)")
    if os.environ.get("BENCH_DATABASE_URL"):
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_bench"))


DB_URL = _bench_database_url()
DB_NAME = urlsplit(DB_URL).path.lstrip("/")


def _conninfo(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


# --- the database --------------------------------------------------------------------------------


def prepare_database(env: dict) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(_conninfo(DB_URL))._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([PY, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    with psycopg.connect(_conninfo(DB_URL), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE assignments_event, assignments_assignment, assignments_profile, assignments_idempotencykey, "
            "agents_agent, pools_agentpool, authtoken_token, auth_user_groups, auth_user CASCADE"
        )


def make_operator(env: dict) -> str:
    """An operator's API token, made the way an admin would (manage.py shell)."""
    code = (
        "from django.contrib.auth.models import User;"
        "from rest_framework.authtoken.models import Token;"
        "u = User.objects.create_user('bench-operator', is_staff=True);"
        "print(Token.objects.create(user=u).key)"
    )
    out = subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def db_sessions() -> int:
    import psycopg

    with psycopg.connect(_conninfo(DB_URL), autocommit=True) as conn:
        return conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", [DB_NAME]).fetchone()[0]


# --- a small keep-alive HTTP/1.1 client (asyncio), so the client costs little CPU ---------------


class Http:
    def __init__(self):
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body=None, token: str | None = None, headers=None, retry=True):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, PORT)
        payload = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{PORT}", f"Content-Length: {len(payload)}"]
        if payload:
            lines.append("Content-Type: application/json")
        if token:
            lines.append(f"Authorization: Token {token}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            status_line = await self.reader.readline()
        except (ConnectionResetError, BrokenPipeError):
            status_line = b""  # the same: an idle connection the server had closed (it read nothing)
        if not status_line and retry:
            # The server closed an idle keep-alive connection (uvicorn: after 5 s; an agent waiting for
            # its profile on the WebSocket leaves its HTTP connection idle that long): reconnect once.
            await self.close()
            return await self.request(method, path, body, token, headers, retry=False)
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, (json.loads(data) if data else None)

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


# --- measuring -----------------------------------------------------------------------------------


class Phase:
    def __init__(self, name: str, concurrency: int):
        self.name, self.concurrency = name, concurrency
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.elapsed = 0.0
        self.server_cpu_seconds: float | None = None

    def record(self, started: float, ok: bool, what: str = ""):
        self.latencies.append(time.perf_counter() - started)
        if not ok:
            self.errors[what] = self.errors.get(what, 0) + 1

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "phase": self.name,
            "concurrency": self.concurrency,
            "requests": n,
            "seconds": round(self.elapsed, 2),
            "rps": round(n / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(lat[n // 2] * 1000, 2) if n else None,
            "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if n else None,
            "server_cpu_ms": round(self.server_cpu_seconds * 1000 / n, 2) if n and self.server_cpu_seconds is not None else None,
            "errors": self.errors,
        }


async def run_workers(phase: Phase, total: int, work) -> None:
    """`work(worker, i)` done `total` times by `phase.concurrency` workers; stops at PHASE_SECONDS."""
    counter = iter(range(total))
    deadline = time.perf_counter() + PHASE_SECONDS

    async def worker(w):
        state = {}
        for i in counter:
            if time.perf_counter() > deadline:
                break
            await work(w, i, state)
        if "http" in state:
            await state["http"].close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(phase.concurrency)))
    phase.elapsed = time.perf_counter() - started


# Heartbeats per second per agent in the paced phase (real agents beat every few seconds).
PACED_RATE = float(os.environ.get("BENCH_PACED_RATE", "1"))
PACED_SECONDS = float(os.environ.get("BENCH_PACED_SECONDS", "15"))


async def run_paced(phase: Phase, rate: float, seconds: float, beat) -> None:
    """Open loop: each of the 32 agents calls `beat(agent, state)` `rate` times a second, spread
    evenly, whatever the answers' latency — the load of a fleet, not of a saturating client."""

    async def agent(a):
        state = {}
        start = time.perf_counter() + a / (FLEET * rate)
        k = 0
        while True:
            due = start + k / rate
            if due - started > seconds:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await beat(a, state)
            k += 1
        if "http" in state:
            await state["http"].close()

    started = time.perf_counter()
    await asyncio.gather(*(agent(a) for a in range(FLEET)))
    phase.elapsed = time.perf_counter() - started


def agent_for(worker: int, i: int, concurrency: int) -> int:
    """Each worker cycles over its own agents (disjoint across workers), so no two workers ever
    race for one profile: this measures the happy path, not conflicts."""
    per_worker = AGENTS // concurrency
    return worker + concurrency * ((i // concurrency) % per_worker)


# --- the HTTP phases -----------------------------------------------------------------------------


async def http_setup(operator: str) -> tuple[list[str], list[str]]:
    http = Http()
    status, body = await http.request("POST", "/api/pools", {"name": "bench", "platform": "bare"}, token=operator)
    assert status == 201, (status, body)
    enrollment = body["enrollment_token"]
    tokens = []
    for a in range(AGENTS):
        status, body = await http.request(
            "POST", "/api/agents/register", {"agent_id": f"bench-{a}", "pool": "bench", "capacity": 4},
            headers={"X-Enrollment-Token": enrollment},
        )
        assert status == 201, (status, body)
        tokens.append(body["token"])
    profiles = []
    for p in range(PROFILES):
        status, body = await http.request("POST", "/api/profiles", {"profile_id": f"bench-p{p}", "pool": "bench"}, token=operator)
        assert status == 201, (status, body)
        profiles.append(body["profile_id"])
    await http.close()
    return tokens, profiles


# --- closed-loop phases, the load generator split over processes ----------------------------------


def _profile_for(a: int, i: int) -> str:
    return f"bench-p{2 * a + (i // AGENTS) % 2}"


async def _cycle(http, phase, a, i, tokens) -> None:
    t = time.perf_counter()
    status, body = await http.request("POST", "/api/assignments", {"profile_id": _profile_for(a, i), "agent_id": f"bench-{a}"},
                                      token=tokens[a])
    phase.record(t, status == 201, f"take {status}")
    if status != 201:
        return
    t = time.perf_counter()
    status, _ = await http.request("DELETE", f"/api/assignments/{body['assignment_id']}", token=tokens[a])
    phase.record(t, status == 200, f"release {status}")


async def _beat(http, phase, a, tokens, held) -> None:
    t = time.perf_counter()
    status, body = await http.request(
        "POST", f"/api/agents/bench-{a}/heartbeat",
        {"load_metrics": {"cpu": 35.5, "memory": 40, "active_connections": 2}, "assignments": held[a]}, token=tokens[a],
    )
    phase.record(t, status == 200 and not body["revoked"], f"heartbeat {status}")


async def _shard(kind, concurrency, total, shard, shards, tokens, held, start_at):
    """One load-generator process: workers shard, shard + shards, ... of `concurrency`."""
    workers = list(range(shard, concurrency, shards))
    phase = Phase(kind, concurrency)
    counter = iter(range(total * len(workers) // concurrency))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + PHASE_SECONDS

    async def worker(w):
        http = Http()
        for i in counter:
            if time.perf_counter() > deadline:
                break
            a = agent_for(w, i, concurrency)
            if kind == "cycle":
                await _cycle(http, phase, a, i, tokens)
            else:
                await _beat(http, phase, a, tokens, held)
        await http.close()

    await asyncio.gather(*(worker(w) for w in workers))
    return phase.latencies, phase.errors, time.time() - start_at


def _shard_main(args):
    return asyncio.run(_shard(*args))


def server_cpu_seconds(session: int) -> float:
    """CPU time (user + system) of every process in the server's session, from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat, counted after the command name
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_sharded(name: str, kind: str, concurrency: int, total: int, tokens, held=None, server=None) -> Phase:
    import multiprocessing

    shards = max(1, min(LOADGEN_PROCESSES, concurrency))
    start_at = time.time() + 1.0
    cpu_before = server_cpu_seconds(server.pid) if server else None
    with multiprocessing.get_context("fork").Pool(shards) as pool:
        parts = pool.map(_shard_main, [(kind, concurrency, total, k, shards, tokens, held, start_at) for k in range(shards)])
    phase = Phase(name, concurrency)
    for latencies, errors, elapsed in parts:
        phase.latencies.extend(latencies)
        for what, n in errors.items():
            phase.errors[what] = phase.errors.get(what, 0) + n
        phase.elapsed = max(phase.elapsed, elapsed)
    if server:
        phase.server_cpu_seconds = server_cpu_seconds(server.pid) - cpu_before
    return phase


async def _hold_two_each(tokens) -> dict[int, list[str]]:
    """Each agent takes its two profiles (held during the heartbeat phases, and reported)."""
    http = Http()
    held: dict[int, list[str]] = {}
    for a in range(AGENTS):
        for p in (2 * a, 2 * a + 1):
            status, body = await http.request("POST", "/api/assignments", {"profile_id": f"bench-p{p}"}, token=tokens[a])
            assert status == 201, (status, body)
            held.setdefault(a, []).append(body["assignment_id"])
    await http.close()
    return held


async def _release_all(tokens, held) -> None:
    http = Http()
    for a, ids in held.items():
        for assignment_id in ids:
            await http.request("DELETE", f"/api/assignments/{assignment_id}", token=tokens[a])
    await http.close()


async def http_paced(tokens, held, server) -> list[Phase]:
    paced = Phase(f"HTTP heartbeat paced {PACED_RATE:g}/s/agent", FLEET)

    async def beat(a, state):
        await _beat(state.setdefault("http", Http()), paced, a, tokens, held)

    cpu = server_cpu_seconds(server.pid)
    await run_paced(paced, PACED_RATE, PACED_SECONDS, beat)
    paced.server_cpu_seconds = server_cpu_seconds(server.pid) - cpu
    return [paced]


async def http_fleet(tokens, server) -> Phase:
    """A steady fleet: 32 agents, each one take → release a second (open loop)."""
    fleet = Phase(f"HTTP fleet take→release {PACED_RATE:g}/s/agent", FLEET)
    counts = {}

    async def cycle(a, state):
        i = counts[a] = counts.get(a, -1) + 1
        await _cycle(state.setdefault("http", Http()), fleet, a, i, tokens)

    cpu = server_cpu_seconds(server.pid)
    await run_paced(fleet, PACED_RATE, PACED_SECONDS, cycle)
    fleet.server_cpu_seconds = server_cpu_seconds(server.pid) - cpu
    return fleet


async def http_soak(tokens, operator, seconds: float) -> dict:
    """Invariant 4 under a long run: a reader polls the event log from its last seq while 32
    agents take and release as fast as they can; every event must arrive once, in order, gap-free."""
    stop = asyncio.Event()
    stats = {"cycles": 0, "errors": 0}
    seen: list[int] = []
    problems: list[str] = []

    async def last_seq(http) -> int:
        status, body = await http.request("GET", "/api/events?since=0&limit=1", token=operator)
        seq = 0
        while body["results"]:
            seq = body["results"][-1]["seq"]
            status, body = await http.request("GET", f"/api/events?since={seq}&limit=500", token=operator)
        return seq

    async def writer(a):
        http, i = Http(), 0
        while not stop.is_set():
            phase = Phase("soak", 1)
            await _cycle(http, phase, a, i, tokens)
            stats["cycles"] += 1
            stats["errors"] += sum(phase.errors.values())
            i += 1
        await http.close()

    async def reader(cursor):
        http = Http()
        while True:
            finished = stop.is_set()
            status, body = await http.request("GET", f"/api/events?since={cursor}&limit=500", token=operator)
            for event in body["results"]:
                if event["seq"] <= cursor:
                    problems.append(f"seq {event['seq']} after {cursor}")
                elif seen and event["seq"] != seen[-1] + 1:
                    problems.append(f"hole: {seen[-1]} then {event['seq']}")
                seen.append(event["seq"])
                cursor = event["seq"]
            if finished and not body["results"]:
                break
            if not body["results"]:
                await asyncio.sleep(0.01)
        await http.close()
        return cursor

    http = Http()
    start = await last_seq(http)
    reading = asyncio.create_task(reader(start))
    writers = [asyncio.create_task(writer(a)) for a in range(FLEET)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*writers)
    await reading
    end = await last_seq(http)
    await http.close()
    expected = end - start  # numbered at commit: every seq from start+1 to end exists
    return {
        "seconds": seconds, "cycles": stats["cycles"], "request_errors": stats["errors"], "events_seen": len(seen),
        "events_in_log": expected, "ordered_gap_free_exactly_once": not problems and len(seen) == expected,
        "problems": problems[:10],
    }


# --- the same work as raw SQL (the floor) --------------------------------------------------------

TAKE_SQL = [
    ("SELECT id, pool_id, status, capacity FROM agents_agent WHERE agent_id = %s FOR UPDATE", "agent"),
    ("SELECT id, pool_id, enabled, fencing_token FROM assignments_profile WHERE profile_id = %s FOR UPDATE", "profile"),
]


async def sql_take(conn, agent_id: str, profile_id: str) -> str:
    async with conn.transaction():
        agent = await (await conn.execute(TAKE_SQL[0][0], [agent_id])).fetchone()
        profile = await (await conn.execute(TAKE_SQL[1][0], [profile_id])).fetchone()
        live = ("pending", "active", "idle", "releasing")
        holder = await (await conn.execute(
            "SELECT id FROM assignments_assignment WHERE profile_id = %s AND status = ANY(%s) LIMIT 1", [profile[0], list(live)]
        )).fetchone()
        assert holder is None
        count = await (await conn.execute(
            "SELECT count(*) FROM assignments_assignment WHERE agent_id = %s AND status = ANY(%s)", [agent[0], list(live)]
        )).fetchone()
        assert count[0] < agent[3]
        token = profile[3] + 1
        await conn.execute("UPDATE assignments_profile SET fencing_token = %s WHERE id = %s", [token, profile[0]])
        assignment_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO assignments_assignment (assignment_id, profile_id, pool_id, agent_id, workflow_id, status, assigned_at,"
            " last_activity, fencing_token, platform_resource_id, release_reason, metadata)"
            " VALUES (%s, %s, %s, %s, '', 'active', now(), now(), %s, '', '', '{}')",
            [assignment_id, profile[0], agent[1], agent[0], token],
        )
        # numbered during COMMIT by the event-order trigger (migration assignments/0008), as the app's
        await conn.execute(
            "INSERT INTO assignments_event (type, occurred_at, actor, assignment_id, profile_id, agent_id, pool, task_id,"
            " from_status, to_status, data) VALUES ('assignment.created', now(), %s, %s, %s, %s, 'bench', '', '', 'active', %s)",
            [f"agent:{agent_id}", assignment_id, profile_id, agent_id, json.dumps({"fencing_token": token})],
        )
    return assignment_id


async def sql_release(conn, assignment_id) -> None:
    async with conn.transaction():
        row = await (await conn.execute(
            "SELECT a.id, a.status, p.profile_id, g.agent_id FROM assignments_assignment a"
            " JOIN assignments_profile p ON p.id = a.profile_id JOIN agents_agent g ON g.id = a.agent_id"
            " WHERE a.assignment_id = %s FOR UPDATE OF a", [assignment_id]
        )).fetchone()
        await conn.execute(
            "UPDATE assignments_assignment SET status = 'released', released_at = now(), last_activity = now(),"
            " release_reason = 'released' WHERE id = %s", [row[0]]
        )
        await conn.execute(
            "INSERT INTO assignments_event (type, occurred_at, actor, assignment_id, profile_id, agent_id, pool, task_id,"
            " from_status, to_status, data) VALUES ('assignment.released', now(), %s, %s, %s, %s, 'bench', '', 'active', 'released', '{}')",
            [f"agent:{row[3]}", assignment_id, row[2], row[3]],
        )


async def sql_heartbeat(conn, agent_id: str, reported: list) -> None:
    async with conn.transaction():
        agent = await (await conn.execute("SELECT id FROM agents_agent WHERE agent_id = %s FOR UPDATE", [agent_id])).fetchone()
        await conn.execute(
            "UPDATE agents_agent SET last_heartbeat = now(), load_metrics = %s, health_score = 1.0 WHERE id = %s",
            [json.dumps({"cpu": 35.5, "memory": 40, "active_connections": 2}), agent[0]],
        )
        await (await conn.execute(
            "SELECT assignment_id, status FROM assignments_assignment WHERE agent_id = %s AND status = ANY(%s)",
            [agent[0], ["pending", "active", "idle", "releasing"]],
        )).fetchall()
        await conn.execute(
            "UPDATE assignments_assignment SET last_activity = now() WHERE agent_id = %s AND assignment_id = ANY(%s)",
            [agent[0], reported],
        )


async def sql_phases() -> list[Phase]:
    """The floor, phase for phase in the HTTP phases' order: take→release per concurrency, then
    heartbeats per concurrency, the paced heartbeats and the paced fleet."""
    from psycopg_pool import AsyncConnectionPool

    results = []
    # At most 32 connections (PostgreSQL's connections are shared): at 128 clients they queue for one.
    async with AsyncConnectionPool(_conninfo(DB_URL), min_size=8, max_size=32, open=False) as pool:
        await pool.open(wait=True)

        async def cycle(phase, a, i):
            async with pool.connection() as conn:
                t = time.perf_counter()
                assignment_id = await sql_take(conn, f"bench-{a}", _profile_for(a, i))
                phase.record(t, True)
                t = time.perf_counter()
                await sql_release(conn, assignment_id)
                phase.record(t, True)

        for concurrency in CONCURRENCY:
            phase = Phase("SQL take→release", concurrency)

            async def work(w, i, state, concurrency=concurrency, phase=phase):
                await cycle(phase, agent_for(w, i, concurrency), i)

            await run_workers(phase, CYCLES[concurrency], work)
            results.append(phase)
            print(phase.summary(), flush=True)
        held = {}
        async with pool.connection() as conn:
            for a in range(AGENTS):
                held[a] = [await sql_take(conn, f"bench-{a}", f"bench-p{p}") for p in (2 * a, 2 * a + 1)]
        for concurrency in CONCURRENCY:
            phase = Phase("SQL heartbeat", concurrency)

            async def beat(w, i, state, concurrency=concurrency, phase=phase):
                a = agent_for(w, i, concurrency)
                async with pool.connection() as conn:
                    t = time.perf_counter()
                    await sql_heartbeat(conn, f"bench-{a}", held[a])
                    phase.record(t, True)

            await run_workers(phase, HEARTBEATS[concurrency], beat)
            results.append(phase)
            print(phase.summary(), flush=True)
        paced = Phase(f"SQL heartbeat paced {PACED_RATE:g}/s/agent", FLEET)

        async def paced_beat(a, state):
            async with pool.connection() as conn:
                t = time.perf_counter()
                await sql_heartbeat(conn, f"bench-{a}", held[a])
                paced.record(t, True)

        await run_paced(paced, PACED_RATE, PACED_SECONDS, paced_beat)
        results.append(paced)
        print(paced.summary(), flush=True)
        async with pool.connection() as conn:
            for ids in held.values():
                for assignment_id in ids:
                    await sql_release(conn, assignment_id)
        fleet = Phase(f"SQL fleet take→release {PACED_RATE:g}/s/agent", FLEET)
        counts = {}

        async def fleet_cycle(a, state):
            i = counts[a] = counts.get(a, -1) + 1
            await cycle(fleet, a, i)

        await run_paced(fleet, PACED_RATE, PACED_SECONDS, fleet_cycle)
        results.append(fleet)
        print(fleet.summary(), flush=True)
    return results


# --- the server ----------------------------------------------------------------------------------


def start_server(env: dict) -> subprocess.Popen:
    """The production recipe exactly as the README tells an operator: `make serve` (uvicorn, its
    workers, their share of the connection budget), against the bench's database."""
    cmd = ["make", "--no-print-directory", "serve", f"HOST={HOST}", f"PORT={PORT}", f"SERVE_WORKERS={WORKERS}",
           "-o", ".venv/.installed"]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 60
    import urllib.request

    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{PORT}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    sys.exit("the server did not become healthy within 60 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Python {sys.version.split()[0]}"


def table(phases: list[Phase]) -> str:
    rows = ["| phase | concurrency | requests | req/s | p50 ms | p99 ms | server CPU ms/request | errors |",
            "|---|---|---|---|---|---|---|---|"]
    for p in phases:
        s = p.summary()
        rows.append(
            f"| {s['phase']} | {s['concurrency']} | {s['requests']} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} | "
            f"{s['server_cpu_ms'] if s['server_cpu_ms'] is not None else '-'} | {s['errors'] or '-'} |"
        )
    return "\n".join(rows)


# --- conflict resolution (issue 12) --------------------------------------------------------------


async def conflict_setup(operator: str) -> None:
    http = Http()
    for p in range(CONTENDED):
        status, body = await http.request("POST", "/api/profiles", {"profile_id": f"bench-w{p}", "pool": "bench",
                                                                   "tags": ["contended"]}, token=operator)
        assert status == 201, (status, body)
    await http.close()


class Waiter:
    """One agent's own event stream (`/assignments/events?agent_id=…`, from its handshake on), as an
    agent that waits for a profile listens (the SDK's `Agent.profile(wait=)`): when each of its
    assignments became active, or ended, as heard."""

    def __init__(self, agent_id: str, token: str):
        self.agent_id, self.token = agent_id, token
        self.heard: dict[str, tuple[float, str]] = {}  # assignment_id → (when heard, to_status)
        self.changed = asyncio.Event()
        self.task = None

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        self.connection = await connect(f"ws://{HOST}:{PORT}/assignments/events?agent_id={self.agent_id}",
                                        additional_headers={"Authorization": f"Token {self.token}"})
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.connection:
            event = json.loads(raw)
            if event.get("assignment_id") and event.get("to_status") in ("active", "released", "expired", "failed"):
                self.heard.setdefault(event["assignment_id"], (time.perf_counter(), event["to_status"]))
                self.changed.set()

    async def until_settled(self, assignment_id: str, timeout: float) -> tuple[float, str] | None:
        deadline = time.perf_counter() + timeout
        while assignment_id not in self.heard:
            self.changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return None
        return self.heard[assignment_id]

    async def close(self) -> None:
        self.task.cancel()
        await self.connection.close()


async def http_contention(tokens: list[str], hold: float = HOLD_SECONDS, rounds: int = CONTENTION_ROUNDS,
                          server=None) -> list[Phase]:
    """32 agents, 8 profiles, waits: see the module docstring. The server's CPU is shared out over
    the takes and releases alike (each phase row shows the mean of both)."""
    held = f"held {hold * 1000:g} ms"
    takes = Phase(f"HTTP take, {FLEET} agents for {CONTENDED} profiles, wait_seconds, {held}", FLEET)
    releases = Phase(f"HTTP release (+ hand-over to the next waiter, one transaction), {held}", FLEET)
    noticed = Phase(f"hand-over: release sent → next waiter hears active (its WebSocket), {held}", FLEET)
    release_sent: dict[str, float] = {}
    waiters = [Waiter(f"bench-{a}", tokens[a]) for a in range(FLEET)]
    for waiter in waiters:
        await waiter.start()

    async def agent(a: int):
        http, waiter = Http(), waiters[a]
        for r in range(rounds):
            profile = f"bench-w{(a + r) % CONTENDED}"
            t = time.perf_counter()
            status, body = await http.request(
                "POST", "/api/assignments", {"profile_id": profile, "wait_seconds": 30}, token=tokens[a]
            )
            takes.record(t, status in (201, 202), f"take {status}")
            if status not in (201, 202):
                continue
            assignment_id = body["assignment_id"]
            if status == 202 and body["status"] == "pending":
                heard = await waiter.until_settled(assignment_id, 40)
                if heard is None or heard[1] != "active":
                    takes.record(time.perf_counter(), False, f"wait ended {heard[1] if heard else 'unheard'}")
                    await http.request("DELETE", f"/api/assignments/{assignment_id}", token=tokens[a])  # leave no request behind
                    continue
                if profile in release_sent:
                    noticed.latencies.append(heard[0] - release_sent[profile])
            await asyncio.sleep(hold)
            release_sent[profile] = t = time.perf_counter()
            status, _ = await http.request("DELETE", f"/api/assignments/{assignment_id}", token=tokens[a])
            releases.record(t, status == 200, f"release {status}")
        await http.close()

    started, client_cpu = time.perf_counter(), time.process_time()
    cpu = server_cpu_seconds(server.pid) if server else None
    try:
        await asyncio.wait_for(asyncio.gather(*(agent(a) for a in range(FLEET))), timeout=PHASE_SECONDS * 3)
    finally:
        for waiter in waiters:
            await waiter.close()
    for phase in (takes, releases, noticed):
        phase.elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    print(f"contention, {held}: the load generator (one process: {FLEET} HTTP clients, {FLEET} WebSockets) used "
          f"{client_cpu:.1f} s of CPU in {time.perf_counter() - started:.1f} s", flush=True)
    if server:
        cpu = server_cpu_seconds(server.pid) - cpu
        requests = len(takes.latencies) + len(releases.latencies)
        for phase in (takes, releases):
            phase.server_cpu_seconds = cpu * len(phase.latencies) / requests
    return [takes, releases, noticed]


async def http_selection(tokens: list[str], server=None) -> Phase:
    """64 concurrent selections by requirements (2 per agent), released after each round."""
    phase = Phase("HTTP take by profile_requirements", SELECTIONS)
    clients = [Http() for _ in range(SELECTIONS)]

    async def select(i: int):
        a = i % AGENTS
        t = time.perf_counter()
        status, body = await clients[i].request(
            "POST", "/api/assignments", {"profile_requirements": {"pool": "bench"}}, token=tokens[a]
        )
        phase.record(t, status == 201, f"select {status} {((body or {}).get('error') or {}).get('code', '')}".strip())
        return (a, body) if status == 201 else None

    started = time.perf_counter()
    cpu = server_cpu_seconds(server.pid) if server else None
    for _ in range(SELECTION_ROUNDS):
        got = [g for g in await asyncio.gather(*(select(i) for i in range(SELECTIONS))) if g]
        profiles = [body["profile_id"] for _, body in got]
        if len(set(profiles)) != len(profiles):
            phase.errors["the same profile twice"] = phase.errors.get("the same profile twice", 0) + 1
        for a, body in got:
            await clients[0].request("DELETE", f"/api/assignments/{body['assignment_id']}", token=tokens[a])
    phase.elapsed = time.perf_counter() - started
    if server:  # the releases between rounds included
        phase.server_cpu_seconds = server_cpu_seconds(server.pid) - cpu
    for client in clients:
        await client.close()
    return phase


async def conflict_phases(operator: str, tokens: list[str] | None = None, server=None) -> list[Phase]:
    if tokens is None:
        tokens, _ = await http_setup(operator)
    await conflict_setup(operator)
    phases = await http_contention(tokens, server=server)
    phases += await http_contention(tokens, hold=HELD_HOLD_SECONDS, rounds=HELD_ROUNDS, server=server)
    for phase in phases:
        print(phase.summary(), flush=True)
    phases.append(await http_selection(tokens, server=server))
    print(phases[-1].summary(), flush=True)
    return phases


def http_phases(operator: str, server) -> tuple[list[Phase], list[str]]:
    tokens, _ = asyncio.run(http_setup(operator))
    phases = []
    for c in CONCURRENCY:
        phases.append(run_sharded("HTTP take→release", "cycle", c, CYCLES[c], tokens, server=server))
        print(phases[-1].summary(), flush=True)
    held = asyncio.run(_hold_two_each(tokens))
    for c in CONCURRENCY:
        phases.append(run_sharded("HTTP heartbeat", "beat", c, HEARTBEATS[c], tokens, held, server=server))
        print(phases[-1].summary(), flush=True)
    phases.extend(asyncio.run(http_paced(tokens, held, server)))
    print(phases[-1].summary(), flush=True)
    asyncio.run(_release_all(tokens, held))
    phases.append(asyncio.run(http_fleet(tokens, server)))
    print(phases[-1].summary(), flush=True)
    if SOAK_SECONDS > 0:
        print(f"soak: {SOAK_SECONDS:g} s of take→release by {FLEET} agents, a reader checking the event log", flush=True)
        soak = asyncio.run(http_soak(tokens, operator, SOAK_SECONDS))
        print(f"soak: {soak}", flush=True)
        if not soak["ordered_gap_free_exactly_once"]:
            sys.exit("soak: the event log broke invariant 4 (see problems)")
    return phases, tokens


def main() -> None:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": DB_URL,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": env.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "TETHER_DB_POOL": "1",
            "TETHER_DB_POOL_MIN_SIZE": env.get("TETHER_DB_POOL_MIN_SIZE", "4"),
            "TETHER_DB_POOL_MAX_SIZE": env.get("TETHER_DB_POOL_MAX_SIZE", "16"),
            "TETHER_LOG_LEVEL": "WARNING",
            # The bench's clients are many agents on one address: no throttle in the way.
            "TETHER_API_THROTTLE_RATE": env.get("TETHER_API_THROTTLE_RATE", "1000000/min"),
        }
    )
    if not env.get("REDIS_URL"):
        sys.exit("make bench needs Redis too: set REDIS_URL (cache, throttling and the channel layer)")
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at the start")
    print(f"server: make serve (uvicorn), {WORKERS} workers, http://{HOST}:{PORT}, database {DB_NAME}, psycopg pool on; "
          f"load generator: {LOADGEN_PROCESSES} processes")
    prepare_database(env)
    operator = make_operator(env)
    server = start_server(env)
    try:
        if ONLY == "conflicts":
            conflicts = asyncio.run(conflict_phases(operator, server=server))
            print("\n" + table(conflicts) + "\n")
            if any(p.errors for p in conflicts):
                sys.exit("some requests failed (see the errors column)")
            return
        sessions_before = db_sessions()
        http, tokens = http_phases(operator, server)
        new_sessions = db_sessions() - sessions_before
        conflicts = asyncio.run(conflict_phases(operator, tokens, server=server))
    finally:
        stop_server(server)
    sql = asyncio.run(sql_phases())
    requests = sum(len(p.latencies) for p in http)
    print(f"\nnew database sessions opened by the server during {requests} HTTP requests: {new_sessions}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("\n" + table(http + sql) + "\n")
    print("| work | concurrency | HTTP/SQL throughput | HTTP/SQL p50 | HTTP/SQL p99 |\n|---|---|---|---|---|")
    for h, s in zip(http, sql):
        hs, ss = h.summary(), s.summary()
        print(
            f"| {h.name[5:]} | {h.concurrency} | {hs['rps'] / ss['rps']:.2f} | "
            f"{hs['p50_ms'] / ss['p50_ms']:.1f}× | {hs['p99_ms'] / ss['p99_ms']:.1f}× |"
        )
    print("\nConflict resolution (issue 12):\n\n" + table(conflicts) + "\n")
    if any(p.errors for p in http + conflicts):
        sys.exit("some requests failed (see the errors column)")


if __name__ == "__main__":
    main()
