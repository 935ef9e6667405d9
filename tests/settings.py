"""Settings for the test suite: the real services wherever they are reachable.

PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379) are used when they answer, or
whatever DATABASE_URL / REDIS_URL name. Without them the suite runs on SQLite and in-process layers,
and the tests that need the real thing are skipped with the reason (see tests/conftest.py).
With TETHER_TEST_REQUIRE_SERVICES=1 (as in CI) an unreachable service is a failure, not a skip.
"""

import os
import secrets
import socket
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_REQUIRE = os.environ.get("TETHER_TEST_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}
PG_HOST, PG_PORT = os.environ.get("TETHER_TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("TETHER_TEST_PG_PORT", "5432"))
REDIS_HOST, REDIS_PORT = os.environ.get("TETHER_TEST_REDIS_HOST", "127.0.0.1"), int(os.environ.get("TETHER_TEST_REDIS_PORT", "6379"))

if "DATABASE_URL" not in os.environ and _reachable(PG_HOST, PG_PORT):
    os.environ["DATABASE_URL"] = f"postgres://postgres@{PG_HOST}:{PG_PORT}/tether"
if "REDIS_URL" not in os.environ and _reachable(REDIS_HOST, REDIS_PORT):
    os.environ["REDIS_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/15"

def _url_reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    return _reachable(parts.hostname or "127.0.0.1", parts.port or default_port)


if _REQUIRE:
    problems = []
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres"):
        problems.append(f"PostgreSQL (nothing answers at {PG_HOST}:{PG_PORT} and DATABASE_URL is not set)")
    elif not _url_reachable(database_url, 5432):
        problems.append("PostgreSQL (DATABASE_URL does not answer)")
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        problems.append(f"Redis (nothing answers at {REDIS_HOST}:{REDIS_PORT} and REDIS_URL is not set)")
    elif not _url_reachable(redis_url, 6379):
        problems.append("Redis (REDIS_URL does not answer)")
    if problems:
        raise ImproperlyConfigured(
            "TETHER_TEST_REQUIRE_SERVICES is set, so these must be reachable: " + "; ".join(problems)
        )

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("TETHER_KEY_PREFIX", f"tether-test-{os.getpid()}")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES  # noqa: E402

TEST_ON_POSTGRES = DATABASES["default"]["ENGINE"] in ("django.db.backends.postgresql", "config.dbpool")
TEST_ON_REDIS = bool(os.environ.get("REDIS_URL"))
if "TETHER_DB_POOL" not in os.environ and DATABASES["default"].get("OPTIONS", {}).pop("pool", None) is not None:
    # The suite's own process opens a plain connection per thread, as before: its race tests run
    # more threads than a production pool holds, and pytest-django renames the database after
    # settings load. Servers the tests start as subprocesses set TETHER_DB_POOL=1, as production.
    # Without the pool its backend (config.dbpool) and its check have nothing to do: Django's own,
    # with Django's check of a persistent connection, as without the pool in production.
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if "TETHER_REDIS_TIMEOUT" not in os.environ and "OPTIONS" in CACHES["default"]:  # noqa: F405
    # Likewise the suite's own Redis waits: production's are short (a hung Redis must cost a request
    # milliseconds), and on a loaded CI machine a healthy Redis now and then answers later than
    # that, which would turn cache assertions into coin tosses. Servers the tests start keep
    # production's timeouts, and tests/dashboard/test_redis_faults.py holds them to it.
    CACHES["default"]["OPTIONS"].update({"SOCKET_TIMEOUT": 2.0, "SOCKET_CONNECT_TIMEOUT": 2.0})  # noqa: F405
    TETHER_REDIS_BACKOFF_SECONDS = 0.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
# Jobs run only where a test runs them (never from an ASGI app a test drives).
TETHER_EMBEDDED_JOBS = False
