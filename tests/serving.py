"""Real servers for the tests that need them, started the way the README tells an operator to:
`make serve` (production: uvicorn, its workers and their connection pools) and daphne as `make run`
starts it (config/launcher.py) — each a subprocess on a loopback port, in a session of its own so
that stopping it stops everything it started. Also a Redis of a test's own (to stop, restart, hang)
and a small keep-alive HTTP client for load.

No Django imports: the callers hand in the test run's settings.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import redis

from tests.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
# Every server connection a test starts names itself, so that pg_stat_activity tells them apart
# from the suite's own and from other suites sharing the PostgreSQL server.
APPLICATION_NAME = f"tether-test-server-{os.getpid()}"


def database_url(db: dict, **params) -> str:
    """A DATABASE_URL for the settings entry `db` (the test database), with libpq parameters."""
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return url + ("?" + urlencode(params) if params else "")


def server_env(settings, *, redis_url: str | None = None, **extra) -> dict:
    """The environment of a production server on the test database: production settings
    (config.settings), this run's secret key and key prefix (so that events published by either
    process reach the other's subscribers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_DB_", "SERVE_", "PYTEST_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(settings.DATABASES["default"], application_name=APPLICATION_NAME),
        "REDIS_URL": redis_url or settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "TETHER_KEY_PREFIX": settings.TETHER_KEY_PREFIX,
        "TETHER_CELERY_QUEUE": f"tether-test-{os.getpid()}",  # nothing of ours reaches a real worker
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Server:
    """A server subprocess in a session of its own, logging to a file (never a pipe nobody reads)."""

    def __init__(self, argv: list[str], env: dict, port: int, *, timeout: float = 120.0):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix="tether-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_for_port(port, self.proc, timeout=timeout, log_tail=self.log_tail)
        except BaseException:
            self.stop()
            raise

    def log_tail(self, n: int = 4000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-n:]

    def stop(self) -> None:
        """SIGTERM to the whole session (make, uvicorn's parent and its workers), SIGKILL after 15 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        # Workers outlive their parent when it was killed: make sure none is left.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()
        os.unlink(self.log.name)


def make_serve(env: dict, *, workers: int = 1, db_connections: int = 8, port: int | None = None) -> Server:
    """`make serve HOST=127.0.0.1 PORT=…`, exactly as the README's production section runs it."""
    port = port or free_port()
    argv = ["make", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={port}",
            f"SERVE_WORKERS={workers}", f"SERVE_DB_CONNECTIONS={db_connections}"]
    return Server(argv, env, port)


def daphne(env: dict, *, port: int | None = None) -> Server:
    """daphne as `make run` starts it (config/launcher.py), minus its access log."""
    port = port or free_port()
    argv = [str(Path(sys.executable).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port),
            "config.asgi:application"]
    return Server(argv, env, port)


class OwnRedis:
    """A Redis of the test's own (no persistence) on a loopback port: stop it, restart it, hang it."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, self.proc, timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a hung one must be able to die
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port: everything it held (groups included) is gone."""
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def hang(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def db_backends(cursor, database: str) -> list[tuple[int, str]]:
    """(pid, state) of the connections test servers hold to `database`."""
    cursor.execute(
        "SELECT pid, coalesce(state, '') FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        [database, APPLICATION_NAME],
    )
    return list(cursor.fetchall())


class Http:
    """A keep-alive HTTP/1.1 client on asyncio (one connection; requests in turn), cheap enough for
    the test process to drive dozens of agents at once."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body=None, headers=None, timeout: float = 30.0):
        return await asyncio.wait_for(self._request(method, path, body, headers or {}), timeout)

    async def _request(self, method, path, body, headers, retry=True):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(payload)}"]
        if payload:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        status_line = await self.reader.readline()
        if not status_line and retry:  # the server closed an idle keep-alive connection
            await self.close()
            return await self._request(method, path, body, headers, retry=False)
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode("utf-8", "replace")

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def wait_until(predicate, *, timeout: float, every: float = 0.2):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
