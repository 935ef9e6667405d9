"""`make bench-coordinator COORDINATOR=<checkout of oib/AITBC>`: Tether against the AITBC agent
coordinator (FastAPI, agents held in memory and written to Redis) on this machine, the same load on
both (issue 15's target: register, heartbeat, get agent and discover at least as fast in req/s).

Not a test (not collected by pytest). The coordinator's code is not in this repository: the operator
gives a checkout (the repository root or its apps/agent-coordinator folder); the script makes the
coordinator a virtualenv of its own (var/coordinator-venv: the packages its app imports to start, at
the versions its pyproject.toml pins) and serves it with tests/bench/coordinator_app.py (its own app
and lifespan; that file says what differs from its systemd service) on 127.0.0.1:9101, with a Redis
database of its own (REDIS_URL's server, database BENCH_COORD_REDIS_DB, default 14, flushed before
and after). Tether runs as the README's production recipe says, `make serve` with one worker
(SERVE_WORKERS=1, like for like with the coordinator's single uvicorn process; BENCH_COORD_TETHER_WORKERS=N
for N, e.g. the recipe's default of one a CPU: the coordinator keeps its agents in its process's
memory, so it cannot run more than one), on 127.0.0.1:8141
against a scratch PostgreSQL database `<DATABASE_URL's name>_coord` (made here; bench_ab.py's
`prepare`/`start`) and REDIS_URL.

Both get AGENTS agents registered first (BENCH_COORD_AGENTS, default 2,000: a third with capability
firefox, the rest chrome; half in region / island "eu"), then, for each kind of request, ROUNDS rounds
(BENCH_COORD_ROUNDS, default 3), each round one phase on each server (which goes first alternates),
the same N requests (BENCH_COORD_N, default 1,000; discover BENCH_COORD_DISCOVER_N, default N / 2)
sent by the same load generator: 32 keep-alive connections (api_bench's `Http` client) split over
BENCH_COORD_LOADGEN_PROCESSES processes (default 2), closed loop:

- discover: `POST .../agents/discover` capabilities [chrome], status active, region (Tether) /
  island_id (coordinator) "eu", limit 100 — both answer the same 100 agents of the ~667 that match;
- get agent: `GET .../agents/{id}`, cycling over the agents (Tether: with the agent's own token);
- heartbeat: `POST .../agents/{id}/heartbeat` with load metrics and an empty assignment list (the
  coordinator's route reads no body);
- register: `POST .../agents/register` of new agents (Tether: with the pool's enrollment token).
- no route: `GET .../no-such-route/{n}`, a 404 from each (Tether's in its error shape, through its
  middleware): what the server and its framework cost a request that does nothing — the floor under
  the four above, not a target.

For each it reports the median over the rounds of req/s and of the server's CPU per request (user +
system of every process of the server's session, from /proc: `make`, the supervisor and the worker
for Tether; the uvicorn process for the coordinator), PostgreSQL's CPU per request for Tether (its
database's backends; the coordinator's Redis and Tether's Redis are not counted), and the ratio
Tether / coordinator. Each phase stops after BENCH_COORD_PHASE_SECONDS (default 30) whatever its
count. BENCH_COORD_LOG_LEVEL=INFO runs the coordinator with its service's logging (default WARNING,
as Tether's here). Loopback only; stops both servers; Tether holds at most 16 PostgreSQL connections meanwhile.

    make bench-coordinator COORDINATOR=~/src/AITBC        (needs DATABASE_URL and REDIS_URL)
"""

import asyncio
import multiprocessing
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # before api_bench's import, which exits on a missing DATABASE_URL with `make bench`'s words
    if not os.environ.get("BENCH_COORDINATOR"):
        sys.exit("make bench-coordinator needs COORDINATOR=<a checkout of oib/AITBC: its root or apps/agent-coordinator>")
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("make bench-coordinator needs DATABASE_URL (PostgreSQL) and REDIS_URL")
sys.path.insert(0, str(ROOT))
from tests.bench.api_bench import server_cpu_seconds  # noqa: E402
from tests.bench.bench_ab import Client, postgres_cpu, prepare, start, stop, wait_healthy  # noqa: E402

AGENTS = int(os.environ.get("BENCH_COORD_AGENTS", "2000"))
N = int(os.environ.get("BENCH_COORD_N", "1000"))
DISCOVER_N = int(os.environ.get("BENCH_COORD_DISCOVER_N", str(max(1, N // 2))))
ROUNDS = int(os.environ.get("BENCH_COORD_ROUNDS", "3"))
PROCESSES = int(os.environ.get("BENCH_COORD_LOADGEN_PROCESSES", "2"))
PHASE_SECONDS = float(os.environ.get("BENCH_COORD_PHASE_SECONDS", "30"))
REDIS_DB = int(os.environ.get("BENCH_COORD_REDIS_DB", "14"))
TETHER_WORKERS = int(os.environ.get("BENCH_COORD_TETHER_WORKERS", "1"))
CONCURRENCY = 32
TETHER_PORT, COORDINATOR_PORT = 8141, 9101
POOL = "coord"
KINDS = ("discover", "get agent", "heartbeat", "register", "no route")

VENV = ROOT / "var" / "coordinator-venv"
HOME = ROOT / "var" / "coordinator-home"  # its AITBC_HOME: data, logs, the coin-request SQLite file
# What the coordinator's app imports to start, pinned as the checkout's pyproject.toml pins them: its
# routers package imports every router (hence httpx, pyjwt, sqlmodel), and the shared `aitbc` package
# imports its middleware, auth, network and encryption helpers (prometheus-client, cryptography,
# requests, filelock); its health check reads psutil, its message storage falls back on aiosqlite.
# Enough for commit da56ab66 (src/app, used for docs/bench-api.md) and for c27c654 (src/agent_app).
PACKAGES = ["fastapi", "starlette", "uvicorn", "pydantic", "pydantic-settings", "redis", "prometheus-client",
            "cryptography", "sqlalchemy", "sqlmodel", "pyjwt", "httpx", "requests", "filelock", "psutil", "aiosqlite"]


# --- the coordinator ----------------------------------------------------------------------------


def coordinator_root(source: str) -> Path:
    path = Path(source).expanduser().resolve()
    for root in (path, *path.parents):
        if (root / "aitbc" / "__init__.py").is_file() and (root / "apps" / "agent-coordinator").is_dir():
            return root
    sys.exit(f"COORDINATOR={source}: not a checkout of oib/AITBC (the repository root or apps/agent-coordinator)")


def checkout_commit(root: Path) -> str:
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def requirements(root: Path) -> list[str]:
    """PACKAGES with the versions (and extras) of the checkout's [tool.poetry.dependencies]."""
    with open(root / "pyproject.toml", "rb") as f:
        pins = tomllib.load(f).get("tool", {}).get("poetry", {}).get("dependencies", {})
    out = []
    for name in PACKAGES:
        pin = pins.get(name)
        if isinstance(pin, dict):
            extras = f"[{','.join(pin['extras'])}]" if pin.get("extras") else ""
            out.append(f"{name}{extras}=={pin['version']}" if pin.get("version") else f"{name}{extras}")
        else:
            out.append(f"{name}=={pin}" if isinstance(pin, str) and pin[:1].isdigit() else name)
    if not any(r.startswith("uvicorn[") for r in out):
        out = [r if not r.startswith("uvicorn") else "uvicorn[standard]" + r[len("uvicorn"):] for r in out]
    return out


def coordinator_venv(root: Path) -> Path:
    """var/coordinator-venv with the coordinator's packages; made or brought up to date here."""
    wanted = requirements(root)
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(wanted):
        return python
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    base = shutil.which("python3.11") or sys.executable
    print(f"installing the coordinator's packages into {VENV.relative_to(ROOT)}: {' '.join(wanted)}", flush=True)
    if uv:
        if not python.exists():
            subprocess.run([uv, "venv", "-q", "--python", base, str(VENV)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *wanted], check=True)
    else:
        if not python.exists():
            subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    stamp.write_text("\n".join(wanted))
    return python


def coordinator_redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return urlunsplit(parts._replace(path=f"/{REDIS_DB}"))


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_coordinator(python: Path, root: Path) -> subprocess.Popen:
    if port_taken(COORDINATOR_PORT):
        sys.exit(f"port {COORDINATOR_PORT} is taken: another coordinator still running?")
    redis_url = coordinator_redis_url()
    flush_redis(redis_url)
    if HOME.exists():
        shutil.rmtree(HOME)
    (HOME / "data" / "data").mkdir(parents=True)
    (HOME / "logs").mkdir()
    # A clean environment (none of Tether's DATABASE_URL, SECRET_KEY…); cwd is its home, so that no
    # .env file of ours is read by its settings.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(HOME), "LANG": "C.UTF-8",
        "SECRET_KEY": secrets.token_urlsafe(32), "JWT_SECRET": secrets.token_urlsafe(32), "REDIS_URL": redis_url, "AITBC_HOME": str(HOME),
        "AGENT_DB_PATH": str(HOME / "data" / "agent_coin_requests.db"), "AITBC_ENABLE_RATE_LIMITING": "false",
        # Its agents turn inactive after 120 s without a heartbeat (a sweep every 30 s rewrites each in
        # Redis): the benchmark's agents heartbeat only in their phase, so the timeout is an hour on
        # both sides (Tether's pool gets heartbeat_timeout_seconds 3600).
        "AGENT_HEARTBEAT_TIMEOUT_SECONDS": "3600",
        "PYTHONPYCACHEPREFIX": str(HOME / "pycache"),  # write nothing into the operator's checkout
        # WARNING, as Tether's TETHER_LOG_LEVEL here; INFO is its service's (a line for every request).
        "COORDINATOR_LOG_LEVEL": os.environ.get("BENCH_COORD_LOG_LEVEL", "WARNING"),
    }
    log = open(HOME / "server.log", "wb")
    server = subprocess.Popen(
        [str(python), str(ROOT / "tests" / "bench" / "coordinator_app.py"), "--source", str(root),
         "--host", "127.0.0.1", "--port", str(COORDINATOR_PORT)],
        cwd=HOME, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    if wait_healthy(server, COORDINATOR_PORT, seconds=120):
        return server
    stop(server)
    sys.exit(f"the coordinator did not start; the end of {HOME / 'server.log'}:\n"
             + (HOME / "server.log").read_text(errors="replace")[-3000:])


# --- the requests ---------------------------------------------------------------------------------


def attributes(i: int) -> dict:
    return {
        "agent_type": "worker",
        "capabilities": ["firefox"] if i % 3 == 0 else ["chrome"],
        "services": ["browse"],
        "endpoints": {"cdp": f"http://10.1.{i // 250 % 250}.{i % 250}:9222"},
        "region": "eu" if i % 2 else "us",
    }


def register_body(server: str, agent_id: str, i: int) -> dict:
    body = attributes(i)
    if server == "tether":
        return {"agent_id": agent_id, "pool": POOL, "capacity": 2, **body}
    region = body.pop("region")
    return {"agent_id": agent_id, **body, "island_id": region}


DISCOVER = {
    "tether": {"capabilities": ["chrome"], "status": "active", "region": "eu", "limit": 100},
    "coordinator": {"capabilities": ["chrome"], "status": "active", "island_id": "eu", "limit": 100},
}
HEARTBEAT = {"load_metrics": {"cpu": 35.5, "memory": 40.0}, "assignments": []}


def request(server: str, kind: str, i: int, rnd: int, ctx: dict):
    """(method, path, body, token, headers, the status that means success) of request i."""
    prefix = "/api" if server == "tether" else "/v1"
    a = i % AGENTS
    token = ctx["tokens"][a] if server == "tether" else None
    if kind == "discover":
        return "POST", f"{prefix}/agents/discover", DISCOVER[server], token, None, 200
    if kind == "get agent":
        return "GET", f"{prefix}/agents/a{a}", None, token, None, 200
    if kind == "heartbeat":
        return "POST", f"{prefix}/agents/a{a}/heartbeat", HEARTBEAT, token, None, 200
    if kind == "no route":  # each framework's floor: routed, refused 404, no credentials, no database
        return "GET", f"{prefix}/no-such-route/{a}", None, None, None, 404
    n = AGENTS + rnd * N + i  # new agents, distinct in every round
    headers = {"X-Enrollment-Token": ctx["enrollment"]} if server == "tether" else None
    return "POST", f"{prefix}/agents/register", register_body(server, f"r{rnd}-{i}", n), None, headers, \
        (201 if server == "tether" else 200)


async def _load(port: int, server: str, kind: str, rnd: int, numbers, workers: int, ctx: dict):
    """`workers` keep-alive connections sending requests `numbers` (shared) closed loop."""
    errors: dict[str, int] = {}
    done = 0
    deadline = time.perf_counter() + PHASE_SECONDS

    async def worker():
        nonlocal done
        http = Client(port)
        for i in numbers:
            if time.perf_counter() > deadline:
                break
            method, path, body, token, headers, ok = request(server, kind, i, rnd, ctx)
            status, reply = await http.request(method, path, body, token=token, headers=headers)
            if status == ok:
                done += 1
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1
        await http.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done, errors


def _shard(args):
    port, server, kind, rnd, total, shard, ctx, start_at = args
    workers = len(range(shard, CONCURRENCY, PROCESSES))

    async def run():
        await asyncio.sleep(max(0.0, start_at - time.time()))
        done, errors = await _load(port, server, kind, rnd, iter(range(shard, total, PROCESSES)), workers, ctx)
        return done, errors, time.time() - start_at

    return asyncio.run(run())


# --- the phases -----------------------------------------------------------------------------------


class Servers:
    def __init__(self, tether: subprocess.Popen, coordinator: subprocess.Popen, db: str):
        self.proc = {"tether": tether, "coordinator": coordinator}
        self.port = {"tether": TETHER_PORT, "coordinator": COORDINATOR_PORT}
        self.db = db


def phase(pool, servers: Servers, server: str, kind: str, rnd: int, ctx: dict) -> dict:
    total = DISCOVER_N if kind == "discover" else N
    pid = servers.proc[server].pid
    cpu, pg = server_cpu_seconds(pid), postgres_cpu(servers.db) if server == "tether" else 0.0
    start_at = time.time() + 0.3
    parts = pool.map(_shard, [(servers.port[server], server, kind, rnd, total, k, ctx, start_at) for k in range(PROCESSES)])
    cpu = server_cpu_seconds(pid) - cpu
    pg = postgres_cpu(servers.db) - pg if server == "tether" else None
    done = sum(p[0] for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for status, n in p[1].items():
            errors[status] = errors.get(status, 0) + n
    elapsed = max(p[2] for p in parts)
    sent = done + sum(errors.values())
    return {"server": server, "kind": kind, "round": rnd, "requests": sent, "ok": done, "errors": errors,
            "seconds": elapsed, "rps": done / elapsed if elapsed else 0.0,
            "cpu_ms": cpu * 1000 / sent if sent else None, "pg_ms": pg * 1000 / sent if sent and pg is not None else None}


async def preload(operator: str) -> dict:
    """A pool on Tether, AGENTS agents registered on both (32 connections each); Tether's tokens."""
    http = Client(TETHER_PORT)
    status, body = await http.request("POST", "/api/pools", {"name": POOL, "platform": "bare", "heartbeat_timeout_seconds": 3600},
                                      token=operator)
    assert status == 201, (status, body)
    await http.close()
    enrollment = body["enrollment_token"]
    tokens: list[str | None] = [None] * AGENTS
    numbers = iter(range(AGENTS))

    async def worker(server):
        http = Client(TETHER_PORT if server == "tether" else COORDINATOR_PORT)
        for i in numbers:
            if server == "tether":
                status, body = await http.request("POST", "/api/agents/register", register_body(server, f"a{i}", i),
                                                  headers={"X-Enrollment-Token": enrollment})
                assert status == 201, (status, body)
                tokens[i] = body["token"]
            else:
                status, body = await http.request("POST", "/v1/agents/register", register_body(server, f"a{i}", i))
                assert status == 200, (status, body)
        await http.close()

    await asyncio.gather(*(worker("tether") for _ in range(CONCURRENCY)))
    numbers = iter(range(AGENTS))
    await asyncio.gather(*(worker("coordinator") for _ in range(CONCURRENCY)))
    ctx = {"tokens": tokens, "enrollment": enrollment}
    # The filters are comparable: both answer the same agents.
    found = {}
    for server in ("tether", "coordinator"):
        http = Client(TETHER_PORT if server == "tether" else COORDINATOR_PORT)
        method, path, body, token, headers, ok = request(server, "discover", 0, 0, ctx)
        status, reply = await http.request(method, path, body, token=token, headers=headers)
        assert status == ok, (server, status, reply)
        found[server] = {a["agent_id"] for a in reply["results" if server == "tether" else "agents"]}
        for kind in ("get agent", "heartbeat", "discover"):  # warm up: the first of each kind pays imports, statements
            for i in range(10):
                method, path, body, token, headers, ok = request(server, kind, AGENTS - 1 - i, 0, ctx)
                status, reply = await http.request(method, path, body, token=token, headers=headers)
                assert status == ok, (server, kind, status, reply)
        await http.close()
    print(f"discover answers {len(found['tether'])} agents on Tether, {len(found['coordinator'])} on the coordinator "
          f"({len(found['tether'] & found['coordinator'])} the same; all healthy, so the order among equals may differ)",
          flush=True)
    return ctx


def idle_cpu(servers: Servers, seconds: float = 3.0) -> dict:
    before = {name: server_cpu_seconds(p.pid) for name, p in servers.proc.items()}
    time.sleep(seconds)
    return {name: (server_cpu_seconds(p.pid) - before[name]) * 1000 / seconds for name, p in servers.proc.items()}


def _fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def report(results: list[dict]) -> None:
    print("\n| request | requests × rounds | coordinator req/s | Tether req/s | Tether / coordinator req/s "
          "| coordinator CPU ms/req | Tether CPU ms/req | Tether / coordinator CPU | Tether PostgreSQL CPU ms/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        mine = {s: [r for r in results if r["kind"] == kind and r["server"] == s] for s in ("coordinator", "tether")}
        if not mine["tether"] or not mine["coordinator"]:
            continue
        med = {s: {k: statistics.median(r[k] for r in rs) for k in ("rps", "cpu_ms")} for s, rs in mine.items()}
        pg = statistics.median(r["pg_ms"] for r in mine["tether"])
        errors = {s: sum(sum(r["errors"].values()) for r in rs) for s, rs in mine.items()}
        requests = mine["tether"][0]["requests"]
        print(f"| {kind} | {requests} × {len(mine['tether'])} | {med['coordinator']['rps']:.0f} | {med['tether']['rps']:.0f} "
              f"| {med['tether']['rps'] / med['coordinator']['rps']:.2f} | {_fmt(med['coordinator']['cpu_ms'])} "
              f"| {_fmt(med['tether']['cpu_ms'])} | {med['tether']['cpu_ms'] / med['coordinator']['cpu_ms']:.2f} "
              f"| {_fmt(pg)} | {errors['coordinator']} / {errors['tether']} |", flush=True)


def main() -> None:
    source = os.environ["BENCH_COORDINATOR"]
    if port_taken(TETHER_PORT):
        sys.exit(f"port {TETHER_PORT} is taken: another Tether still running?")
    root = coordinator_root(source)
    python = coordinator_venv(root)
    print(f"coordinator: {root} at {checkout_commit(root)}; Tether: {ROOT} at "
          f"{subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
          f"load average {os.getloadavg()[0]:.2f} at the start; {AGENTS} agents, {N} requests a phase "
          f"({DISCOVER_N} discover), {ROUNDS} rounds, {CONCURRENCY} connections over {PROCESSES} processes; "
          f"Tether in {TETHER_WORKERS} worker process{'es' if TETHER_WORKERS > 1 else ''}", flush=True)
    db = f"{os.environ['DATABASE_URL'].rsplit('/', 1)[1]}_coord"
    tether = coordinator = None
    results: list[dict] = []
    try:
        coordinator = start_coordinator(python, root)
        env, operator, db = prepare("coord", ROOT, db=db)
        tether = start(ROOT, TETHER_PORT, env, workers=TETHER_WORKERS)
        servers = Servers(tether, coordinator, db)
        started = time.perf_counter()
        ctx = asyncio.run(preload(operator))
        print(f"{AGENTS} agents registered on each in {time.perf_counter() - started:.0f} s", flush=True)
        # Statistics for the planner, as autovacuum gathers them within a minute of a deployment's
        # registrations: without them (a table filled seconds ago) PostgreSQL guesses a handful of
        # agents and may read and sort them all rather than walk an index to the limit.
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:  # the scratch database
            conn.execute("ANALYZE")
        idle = idle_cpu(servers)
        print(f"idle CPU (ms a second): coordinator {idle['coordinator']:.1f} (its task and message loops poll every "
              f"10 ms), Tether {idle['tether']:.1f}\n", flush=True)
        with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
            for kind in KINDS:
                for rnd in range(ROUNDS):
                    order = ("coordinator", "tether") if rnd % 2 == 0 else ("tether", "coordinator")
                    for server in order:
                        r = phase(pool, servers, server, kind, rnd, ctx)
                        results.append(r)
                        print(f"  {kind:9s} round {rnd + 1} {server:11s} {r['ok']:5d} ok in {r['seconds']:5.2f} s "
                              f"{r['rps']:7.1f} req/s  server CPU {_fmt(r['cpu_ms'])} ms/req"
                              + (f"  PostgreSQL {_fmt(r['pg_ms'])} ms/req" if r["pg_ms"] is not None else "")
                              + (f"  errors {r['errors']}" if r["errors"] else ""), flush=True)
        report(results)
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    finally:
        for server in (tether, coordinator):
            if server is not None:
                stop(server)
        try:
            flush_redis(coordinator_redis_url())
        except Exception as e:  # noqa: BLE001 - the figures are out; say why the flush failed
            print(f"could not flush the coordinator's Redis database: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
