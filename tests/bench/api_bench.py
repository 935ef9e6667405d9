"""`make bench`: the REST API's hot paths over real HTTP, against the same work as raw SQL.

Starts the real ASGI server (uvicorn, TETHER_DB_POOL=1, PostgreSQL, Redis) on loopback, registers
32 agents and 64 profiles through the API, then measures:

- take → release cycles (POST /api/assignments, DELETE /api/assignments/{id}) at concurrency 1, 8, 32;
- heartbeats at concurrency 32, each agent reporting the two assignments it holds (closed loop:
  each of the 32 clients sends its next request as soon as the last is answered — saturation);
- the same heartbeats paced as a fleet sends them (open loop: 32 agents, 1 a second each by default (BENCH_PACED_RATE)), which is
  the latency an agent sees at 32 concurrent agents;

and the same transactions as raw SQL through psycopg (the floor), with the ratio. Then conflict
resolution (issue 12), with no SQL floor:

- contention: 32 agents contending for 8 profiles with `wait_seconds` — each takes one (201, or 202
  and it waits), holds it 10 ms, releases it; the hand-over latency is release → next waiter active:
  the release's own round trip (the hand-over commits with it), and what a waiter polling every
  5 ms sees (release sent → it reads `active`);
- selection: 64 concurrent takes by `profile_requirements` (all must get distinct profiles).

Bounded in count and time; stops the server itself. Not a test: speed is measured here, never
asserted in the suite.

Environment: DATABASE_URL (PostgreSQL; the bench uses its own database `<name>_bench`, made and
emptied here), REDIS_URL, BENCH_PORT (default 8101), BENCH_WORKERS (uvicorn workers, default 2),
BENCH_SCALE (multiplies the request counts, default 1), BENCH_ONLY=conflicts (only the conflict
resolution phases: no raw SQL pool, few connections — for checking the harness on a busy machine).
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
AGENTS, PROFILES = 32, 64
PHASE_SECONDS = 60  # no phase runs longer than this, whatever the count
CYCLES = {1: int(200 * SCALE), 8: int(800 * SCALE), 32: int(1600 * SCALE)}
HEARTBEATS = int(2000 * SCALE)
ONLY = os.environ.get("BENCH_ONLY", "")
CONTENDED = 8  # profiles the 32 agents contend for
CONTENTION_ROUNDS = max(2, int(20 * SCALE))  # takes per agent
HOLD_SECONDS = 0.010
POLL_SECONDS = 0.005
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
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        status_line = await self.reader.readline()
        if not status_line and retry:
            # The server closed an idle keep-alive connection: reconnect once.
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
PACED_SECONDS = 15.0


async def run_paced(phase: Phase, rate: float, seconds: float, beat) -> None:
    """Open loop: each of the 32 agents calls `beat(agent, state)` `rate` times a second, spread
    evenly, whatever the answers' latency — the load of a fleet, not of a saturating client."""

    async def agent(a):
        state = {}
        start = time.perf_counter() + a / (AGENTS * rate)
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
    await asyncio.gather(*(agent(a) for a in range(AGENTS)))
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


async def http_cycles(concurrency: int, tokens: list[str]) -> Phase:
    phase = Phase(f"HTTP take→release", concurrency)

    async def work(w, i, state):
        http = state.setdefault("http", Http())
        a = agent_for(w, i, concurrency)
        profile = f"bench-p{2 * a + (i // AGENTS) % 2}"
        t = time.perf_counter()
        status, body = await http.request("POST", "/api/assignments", {"profile_id": profile, "agent_id": f"bench-{a}"}, token=tokens[a])
        phase.record(t, status == 201, f"take {status}")
        if status != 201:
            return
        t = time.perf_counter()
        status, _ = await http.request("DELETE", f"/api/assignments/{body['assignment_id']}", token=tokens[a])
        phase.record(t, status == 200, f"release {status}")

    await run_workers(phase, CYCLES[concurrency], work)
    return phase


async def http_heartbeats(concurrency: int, tokens: list[str]) -> Phase:
    # Each agent holds its two profiles during the heartbeat phase, and reports them.
    http = Http()
    held: dict[int, list[str]] = {}
    for a in range(AGENTS):
        for p in (2 * a, 2 * a + 1):
            status, body = await http.request("POST", "/api/assignments", {"profile_id": f"bench-p{p}"}, token=tokens[a])
            assert status == 201, (status, body)
            held.setdefault(a, []).append(body["assignment_id"])
    phase = Phase("HTTP heartbeat", concurrency)

    async def work(w, i, state):
        h = state.setdefault("http", Http())
        a = agent_for(w, i, concurrency)
        t = time.perf_counter()
        status, body = await h.request(
            "POST", f"/api/agents/bench-{a}/heartbeat",
            {"load_metrics": {"cpu": 35.5, "memory": 40, "active_connections": 2}, "assignments": held[a]}, token=tokens[a],
        )
        phase.record(t, status == 200 and not body["revoked"], f"heartbeat {status}")

    await run_workers(phase, HEARTBEATS, work)
    print(phase.summary(), flush=True)
    paced = Phase(f"HTTP heartbeat paced {PACED_RATE:g}/s/agent", AGENTS)

    async def beat(a, state):
        h = state.setdefault("http", Http())
        t = time.perf_counter()
        status, body = await h.request(
            "POST", f"/api/agents/bench-{a}/heartbeat",
            {"load_metrics": {"cpu": 35.5, "memory": 40, "active_connections": 2}, "assignments": held[a]}, token=tokens[a],
        )
        paced.record(t, status == 200 and not body["revoked"], f"heartbeat {status}")

    await run_paced(paced, PACED_RATE, PACED_SECONDS, beat)
    http = Http()
    for a, ids in held.items():
        for assignment_id in ids:
            await http.request("DELETE", f"/api/assignments/{assignment_id}", token=tokens[a])
    await http.close()
    return [phase, paced]


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
        await conn.execute("SELECT pg_advisory_xact_lock(2122186753)")
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
        await conn.execute("SELECT pg_advisory_xact_lock(2122186753)")
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
    from psycopg_pool import AsyncConnectionPool

    results = []
    async with AsyncConnectionPool(_conninfo(DB_URL), min_size=32, max_size=32, open=False) as pool:
        await pool.open(wait=True)
        for concurrency in (1, 8, 32):
            phase = Phase("SQL take→release", concurrency)

            async def work(w, i, state, concurrency=concurrency, phase=phase):
                a = agent_for(w, i, concurrency)
                profile = f"bench-p{2 * a + (i // AGENTS) % 2}"
                async with pool.connection() as conn:
                    t = time.perf_counter()
                    assignment_id = await sql_take(conn, f"bench-{a}", profile)
                    phase.record(t, True)
                    t = time.perf_counter()
                    await sql_release(conn, assignment_id)
                    phase.record(t, True)

            await run_workers(phase, CYCLES[concurrency], work)
            results.append(phase)
            print(phase.summary(), flush=True)
        held = {}
        async with pool.connection() as conn:
            for a in range(AGENTS):
                held[a] = [await sql_take(conn, f"bench-{a}", f"bench-p{p}") for p in (2 * a, 2 * a + 1)]
        phase = Phase("SQL heartbeat", 32)

        async def beat(w, i, state):
            a = agent_for(w, i, 32)
            async with pool.connection() as conn:
                t = time.perf_counter()
                await sql_heartbeat(conn, f"bench-{a}", held[a])
                phase.record(t, True)

        await run_workers(phase, HEARTBEATS, beat)
        results.append(phase)
        print(phase.summary(), flush=True)
        paced = Phase(f"SQL heartbeat paced {PACED_RATE:g}/s/agent", AGENTS)

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
    return results


# --- the server ----------------------------------------------------------------------------------


def start_server(env: dict) -> subprocess.Popen:
    cmd = [
        str(Path(PY).with_name("uvicorn")), "config.asgi:application", "--host", HOST, "--port", str(PORT),
        "--workers", str(WORKERS), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]
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
    rows = ["| phase | concurrency | requests | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    for p in phases:
        s = p.summary()
        rows.append(
            f"| {s['phase']} | {s['concurrency']} | {s['requests']} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['errors'] or '-'} |"
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


async def http_contention(tokens: list[str]) -> list[Phase]:
    """32 agents, 8 profiles, waits: see the module docstring."""
    takes = Phase(f"HTTP take, {AGENTS} agents for {CONTENDED} profiles, wait_seconds", AGENTS)
    releases = Phase("HTTP release (+ hand-over to the next waiter, one transaction)", AGENTS)
    noticed = Phase(f"waiter sees active (release sent → GET says active, {POLL_SECONDS * 1000:g} ms polls)", AGENTS)
    release_sent: dict[str, float] = {}

    async def agent(a: int):
        http = Http()
        for r in range(CONTENTION_ROUNDS):
            profile = f"bench-w{(a + r) % CONTENDED}"
            t = time.perf_counter()
            status, body = await http.request(
                "POST", "/api/assignments", {"profile_id": profile, "wait_seconds": 30}, token=tokens[a]
            )
            takes.record(t, status in (201, 202), f"take {status}")
            if status not in (201, 202):
                continue
            assignment_id = body["assignment_id"]
            if status == 202:
                while body["status"] == "pending":
                    await asyncio.sleep(POLL_SECONDS)
                    _, body = await http.request("GET", f"/api/assignments/{assignment_id}", token=tokens[a])
                if body["status"] != "active":
                    takes.record(time.perf_counter(), False, f"wait ended {body['status']}")
                    continue
                if profile in release_sent:
                    noticed.latencies.append(time.perf_counter() - release_sent[profile])
            await asyncio.sleep(HOLD_SECONDS)
            release_sent[profile] = t = time.perf_counter()
            status, _ = await http.request("DELETE", f"/api/assignments/{assignment_id}", token=tokens[a])
            releases.record(t, status == 200, f"release {status}")
        await http.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(agent(a) for a in range(AGENTS))), timeout=PHASE_SECONDS * 3)
    for phase in (takes, releases, noticed):
        phase.elapsed = time.perf_counter() - started
    return [takes, releases, noticed]


async def http_selection(tokens: list[str]) -> Phase:
    """64 concurrent selections by requirements (2 per agent), released after each round."""
    phase = Phase("HTTP take by profile_requirements", SELECTIONS)
    clients = [Http() for _ in range(SELECTIONS)]

    async def select(i: int):
        a = i % AGENTS
        t = time.perf_counter()
        status, body = await clients[i].request(
            "POST", "/api/assignments", {"profile_requirements": {"pool": "bench"}}, token=tokens[a]
        )
        phase.record(t, status == 201, f"select {status}")
        return (a, body) if status == 201 else None

    started = time.perf_counter()
    for _ in range(SELECTION_ROUNDS):
        got = [g for g in await asyncio.gather(*(select(i) for i in range(SELECTIONS))) if g]
        profiles = [body["profile_id"] for _, body in got]
        if len(set(profiles)) != len(profiles):
            phase.errors["the same profile twice"] = phase.errors.get("the same profile twice", 0) + 1
        for a, body in got:
            await clients[0].request("DELETE", f"/api/assignments/{body['assignment_id']}", token=tokens[a])
    phase.elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return phase


async def conflict_phases(operator: str, tokens: list[str] | None = None) -> list[Phase]:
    if tokens is None:
        tokens, _ = await http_setup(operator)
    await conflict_setup(operator)
    phases = await http_contention(tokens)
    for phase in phases:
        print(phase.summary(), flush=True)
    phases.append(await http_selection(tokens))
    print(phases[-1].summary(), flush=True)
    return phases


async def http_phases(operator: str) -> list[Phase]:
    tokens, _ = await http_setup(operator)
    phases = []
    for c in (1, 8, 32):
        phases.append(await http_cycles(c, tokens))
        print(phases[-1].summary(), flush=True)
    phases.extend(await http_heartbeats(32, tokens))
    print(phases[-1].summary(), flush=True)
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
        }
    )
    if not env.get("REDIS_URL"):
        sys.exit("make bench needs Redis too: set REDIS_URL (cache, throttling and the channel layer)")
    print(f"machine: {machine()}")
    print(f"server: uvicorn, {WORKERS} workers, http://{HOST}:{PORT}, database {DB_NAME}, psycopg pool on")
    prepare_database(env)
    operator = make_operator(env)
    server = start_server(env)
    try:
        if ONLY == "conflicts":
            conflicts = asyncio.run(conflict_phases(operator))
            print("\n" + table(conflicts) + "\n")
            if any(p.errors for p in conflicts):
                sys.exit("some requests failed (see the errors column)")
            return
        sessions_before = db_sessions()
        http, tokens = asyncio.run(http_phases(operator))
        new_sessions = db_sessions() - sessions_before
        conflicts = asyncio.run(conflict_phases(operator, tokens))
    finally:
        stop_server(server)
    sql = asyncio.run(sql_phases())
    requests = sum(len(p.latencies) for p in http)
    print(f"\nnew database sessions opened by the server during {requests} HTTP requests: {new_sessions}")
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
