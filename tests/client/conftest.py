"""The SDK's tests run against a real Tether, served the way `make serve` serves it in production:
`python -m config.serve` (uvicorn, HTTP and WebSockets) with psycopg's connection pool (`TETHER_DB_POOL=1`, a small pool here),
`config.settings`, this run's test database and Redis — in a subprocess, so every request goes over
the wire as an agent's would.

The tests are transactional (what they write is committed, so the server sees it) and set the stage
through the services, as tests/helpers.py does; everything else goes through the SDK.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.net import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("TETHER_TEST_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}


def pytest_collection_modifyitems(config, items):
    reason = None
    try:
        import tether_client  # noqa: F401
    except ImportError:
        reason = "tether-client is not installed (make install, or pip install -e ./client)"
    if reason is None and not settings.TEST_ON_POSTGRES:
        reason = "the SDK's tests share the test database with a server process: needs PostgreSQL"
    if reason is None or (REQUIRE and settings.TEST_ON_POSTGRES):
        return
    for item in items:
        if "tests/client/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))


def _database_url() -> str:
    db = settings.DATABASES["default"]
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class TetherServer:
    """`make serve`'s command (config/serve.py: uvicorn, one worker here, psycopg's pool) in a subprocess."""

    def __init__(self, **env_overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": _database_url(),
            "SECRET_KEY": settings.SECRET_KEY,
            "TETHER_KEY_PREFIX": settings.TETHER_KEY_PREFIX,  # one channel layer with this test process
            "TETHER_DB_POOL": "1",
            "TETHER_DB_POOL_MIN_SIZE": "1",
            "TETHER_DB_POOL_MAX_SIZE": "3",
            "TETHER_EMBEDDED_JOBS": "0",  # jobs run where a test runs them
            "TETHER_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
            "TETHER_TEST_REQUIRE_SERVICES": "",
        })
        if settings.REDIS_URL:
            env["REDIS_URL"] = settings.REDIS_URL
        env.update(env_overrides)
        self.log = tempfile.NamedTemporaryFile(prefix="tether-serve-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, self.process, timeout=90.0, log_tail=self.log_tail)
        except BaseException:
            self.stop()
            raise

    def log_tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture(scope="session")
def tether_server(django_db_setup, django_db_blocker):
    server = TetherServer()
    yield server
    server.stop()


@dataclass
class World:
    """One test's stage: a pool (with its enrollment token), profiles, an operator's token, and
    the agents a test registered (stopped at the end)."""

    url: str
    pool: str
    enrollment_token: str
    operator_token: str
    profiles: list[str]
    prefix: str
    agents: list = field(default_factory=list)

    def agent(self, name: str = "w1", **kwargs):
        from tether_client import Agent

        agent = Agent.register(self.url, enrollment_token=self.enrollment_token, agent_id=f"{self.prefix}-{name}",
                               pool=self.pool, **{"capacity": 5, **kwargs})
        self.agents.append(agent)
        return agent

    def ops(self):
        from tether_client import Client

        return Client(self.url, token=self.operator_token)


def make_world(url: str, *, profiles: int = 4, pool_fields: dict | None = None) -> World:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from assignments.services import profile_create
    from pools.services import pool_create
    from tests.helpers import OPERATOR

    prefix = f"t{uuid.uuid4().hex[:8]}"
    pool, enrollment = pool_create(name=f"{prefix}-pool", actor=OPERATOR, **(pool_fields or {}))
    ids = []
    for n in range(profiles):
        profile = profile_create(profile_id=f"{prefix}-octo-{n}", actor=OPERATOR, pool=pool.name,
                                 tags=["eu"] if n % 2 == 0 else ["us"], region="eu" if n % 2 == 0 else "us")
        ids.append(profile.profile_id)
    user = get_user_model().objects.create_user(username=f"{prefix}-ops", password=None, is_staff=True)
    token = Token.objects.create(user=user)
    return World(url=url, pool=pool.name, enrollment_token=enrollment, operator_token=token.key, profiles=ids,
                 prefix=prefix)


@pytest.fixture
def world(transactional_db, tether_server):
    w = make_world(tether_server.url)
    yield w
    for agent in w.agents:
        agent.stop()
        agent.http.close()
