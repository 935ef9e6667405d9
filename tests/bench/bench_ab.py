"""`make bench-ab BASE=<git rev>`: the CPU one request costs, this checkout against another commit,
measured side by side so that both see the same machine.

On the shared 2-CPU machine, two runs of the same code minutes apart differ by ±15%: too much to see
a 5–10% change. So two `make serve` (one worker each; the README's production recipe) run at once,
one from this checkout and one from a worktree of BASE (var/bench-ab/base, with this checkout's
virtualenv), each on its own scratch database (`<DATABASE_URL's name>_ab_base`, `…_ab_new`), and the
load generator alternates single requests between them (concurrency 1). For each kind of request it
reports the server's CPU per request (all its processes, from /proc) and PostgreSQL's (the
database's backends, from /proc): get agent, heartbeat, take + release. Loopback only; bounded
(BENCH_AB_N requests of each kind, default 400); stops its servers.

    make bench-ab BASE=700e77d        (needs DATABASE_URL and REDIS_URL)
"""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.api_bench import Http, server_cpu_seconds  # noqa: E402

N = int(os.environ.get("BENCH_AB_N", "400"))
PORTS = {"base": 8121, "new": 8122}


def _admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0].replace("postgres://", "postgresql://", 1) + "/postgres"


def base_worktree(rev: str) -> Path:
    path = ROOT / "var" / "bench-ab" / "base"
    if path.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True)
    (path / ".venv").symlink_to(ROOT / ".venv")  # the same packages; `make` there must not reinstall
    (ROOT / ".venv" / ".installed").touch()
    return path


def prepare(name: str, repo: Path, db: str | None = None) -> tuple[dict, str, str]:
    """A scratch database (`<DATABASE_URL's name>_ab_<name>`, or `db`), migrated, with an operator's
    token: (the server's environment, the token, the database's name)."""
    url = os.environ["DATABASE_URL"]
    db = db or f"{url.rsplit('/', 1)[1]}_ab_{name}"
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    env = dict(os.environ, DATABASE_URL=f"{url.rsplit('/', 1)[0]}/{db}", DJANGO_SETTINGS_MODULE="config.settings",
               SECRET_KEY=secrets.token_urlsafe(50), TETHER_LOG_LEVEL="WARNING", TETHER_KEY_PREFIX=f"bench-ab-{name}",
               TETHER_API_THROTTLE_RATE="1000000/min")
    py = str(repo / ".venv" / "bin" / "python")
    subprocess.run([py, "manage.py", "migrate", "--no-input", "-v0"], cwd=repo, env=env, check=True)
    code = ("from django.contrib.auth.models import User;from rest_framework.authtoken.models import Token;"
            "u = User.objects.create_user('bench-ab', is_staff=True);print(Token.objects.create(user=u).key)")
    out = subprocess.run([py, "manage.py", "shell", "-c", code], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return env, out.stdout.split()[-1], db


def start(repo: Path, port: int, env: dict, *, workers: int = 1) -> subprocess.Popen:
    server = subprocess.Popen(
        ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}", f"SERVE_WORKERS={workers}",
         "SERVE_DB_CONNECTIONS=16"],
        cwd=repo, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait_healthy(server, port, seconds=60):
        return server
    stop(server)
    sys.exit(f"the server on port {port} did not become healthy")


def wait_healthy(server: subprocess.Popen, port: int, *, seconds: float) -> bool:
    """Whether the server on `port` answers /health within `seconds` (False at once if it exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return True
        except OSError:
            time.sleep(0.5)
    return False


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)


def postgres_cpu(db: str) -> float:
    with psycopg.connect(_admin_url(os.environ["DATABASE_URL"]), autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [db]).fetchall()]
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            pass
    return total


class Client(Http):
    """The bench's keep-alive client, on a port of its own."""

    def __init__(self, port: int):
        super().__init__()
        self.port = port

    async def request(self, *args, **kwargs):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return await super().request(*args, **kwargs)


async def setup(port: int, operator: str) -> tuple[Client, str]:
    http = Client(port)
    status, body = await http.request("POST", "/api/pools", {"name": "ab", "platform": "bare"}, token=operator)
    assert status == 201, body
    status, body = await http.request("POST", "/api/agents/register", {"agent_id": "ab-0", "pool": "ab", "capacity": 4},
                                      headers={"X-Enrollment-Token": body["enrollment_token"]})
    assert status == 201, body
    token = body["token"]
    status, body = await http.request("POST", "/api/profiles", {"profile_id": "ab-p", "pool": "ab"}, token=operator)
    assert status == 201, body
    return http, token


async def get_agent(http, token):
    status, _ = await http.request("GET", "/api/agents/ab-0", token=token)
    assert status == 200, status


async def heartbeat(http, token):
    status, body = await http.request("POST", "/api/agents/ab-0/heartbeat",
                                      {"load_metrics": {"cpu": 1}, "assignments": []}, token=token)
    assert status == 200, (status, body)


async def take_release(http, token):
    status, body = await http.request("POST", "/api/assignments", {"profile_id": "ab-p"}, token=token)
    assert status == 201, (status, body)
    status, _ = await http.request("DELETE", f"/api/assignments/{body['assignment_id']}", token=token)
    assert status == 200, status


async def measure(servers: dict, clients: dict, dbs: dict) -> None:
    print(f"| request | server CPU ms, base → new | PostgreSQL CPU ms, base → new | ({N} each, interleaved) |")
    print("|---|---|---|---|")
    for label, work, per in (("get agent", get_agent, 1), ("heartbeat", heartbeat, 1), ("take + release", take_release, 2)):
        for name in clients:
            for _ in range(10):
                await work(*clients[name])  # warm up: prepared statements, pools
        cpu = {name: server_cpu_seconds(servers[name].pid) for name in clients}
        pg = {name: postgres_cpu(dbs[name]) for name in clients}
        for _ in range(N):
            for name in clients:
                await work(*clients[name])
        cpu = {name: (server_cpu_seconds(servers[name].pid) - cpu[name]) * 1000 / N / per for name in clients}
        pg = {name: (postgres_cpu(dbs[name]) - pg[name]) * 1000 / N / per for name in clients}
        print(f"| {label} (per request) | {cpu['base']:.2f} → {cpu['new']:.2f} ({cpu['new'] / cpu['base'] - 1:+.0%}) | "
              f"{pg['base']:.2f} → {pg['new']:.2f} ({pg['new'] / max(pg['base'], 1e-9) - 1:+.0%}) | |", flush=True)


async def setup_and_measure(servers: dict, operators: dict, dbs: dict) -> None:
    clients = {name: await setup(PORTS[name], operators[name]) for name in servers}
    try:
        await measure(servers, clients, dbs)
    finally:
        for http, _ in clients.values():
            await http.close()


def main() -> None:
    rev = os.environ.get("BENCH_AB_BASE", "")
    if not rev or not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("make bench-ab needs BASE=<git rev>, DATABASE_URL (PostgreSQL) and REDIS_URL")
    repos = {"base": base_worktree(rev), "new": ROOT}
    print(f"base {rev} ({repos['base']}), new: this checkout; one `make serve` worker each; load average "
          f"{os.getloadavg()[0]:.2f} at the start\n")
    servers, operators, dbs = {}, {}, {}
    try:
        for name, repo in repos.items():
            env, operators[name], dbs[name] = prepare(name, repo)
            servers[name] = start(repo, PORTS[name], env)
        asyncio.run(setup_and_measure(servers, operators, dbs))
    finally:
        for server in servers.values():
            stop(server)
        subprocess.run(["git", "worktree", "remove", "--force", str(repos["base"])], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
