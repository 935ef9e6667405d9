import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, parse_database_url


@pytest.mark.parametrize("raw,expected", [("1", True), ("true", True), ("YES", True), ("off", False), ("0", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG") is expected


@pytest.mark.parametrize("helper,raw", [(env_bool, "maybe"), (env_int, "12x"), (env_int, "-3"), (env_float, "nan"),
                                        (env_float, "fast")])
def test_env_helpers_refuse_bad_values_loudly(monkeypatch, helper, raw):
    monkeypatch.setenv("X_VALUE", raw)
    with pytest.raises(ImproperlyConfigured, match="X_VALUE"):
        helper("X_VALUE", 1, minimum=0) if helper is not env_bool else helper("X_VALUE")


def test_database_url_parsing():
    pg = parse_database_url("postgres://u:p%40ss@db.local:6543/tether?sslmode=require")
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql", "tether", "u", "p@ss", "db.local", "6543")
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert parse_database_url("sqlite:////tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    for bad in ("mysql://x/y", "postgres://host/", "sqlite://"):
        with pytest.raises(ImproperlyConfigured):
            parse_database_url(bad)


def test_production_mode_requires_a_secret_key(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x", "TETHER_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import config.settings"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("mode", ["embedded", "production"])
def test_system_checks_pass_in_a_fresh_process(tmp_path, mode):
    """`manage.py check` imports modules in its own order (the CSRF failure view first, say);
    an import cycle the test run's import order hides shows up here."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": os.environ["PATH"], "TETHER_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    if mode == "production":
        env.update({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "REDIS_URL": "redis://127.0.0.1:6379/0",
                    "SECRET_KEY": "x" * 50})
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", sorted(
    f"config.api.{p.stem}" for p in (__import__("pathlib").Path(__file__).resolve().parents[1] / "config" / "api").glob("*.py")
))
def test_each_api_module_imports_first_in_a_fresh_process(tmp_path, module):
    """Which module Django happens to import first varies (check order follows a set); an import
    cycle must not depend on luck, so each module is imported first in a process of its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": os.environ["PATH"], "TETHER_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    code = f"import django; django.setup(); import {module}"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]


def _settings_in_a_fresh_process(tmp_path, **env) -> dict:
    """config.settings read by a new interpreter with only `env` set (plus a path and a var dir)."""
    import json
    import subprocess
    import sys

    code = ("import json, config.settings as s; db = s.DATABASES['default']; print(json.dumps({"
            "'pool': db.get('OPTIONS', {}).get('pool'), 'conn_max_age': db.get('CONN_MAX_AGE'), "
            "'binding': db.get('OPTIONS', {}).get('server_side_binding'), "
            "'prepare': db.get('OPTIONS', {}).get('prepare_threshold'), "
            "'engine': db['ENGINE'], 'health_checks': db.get('CONN_HEALTH_CHECKS'), "
            "'http': s.TETHER_HTTP_HANDLER, 'threads': s.TETHER_HTTP_THREADS, "
            "'long_poll_threads': s.TETHER_HTTP_LONG_POLL_THREADS, "
            "'cache_seconds': s.TETHER_ASSIGNMENT_CACHE_SECONDS, "
            "'redis_timeout': s.CACHES['default'].get('OPTIONS', {}).get('SOCKET_TIMEOUT')}, default=repr))")
    full = {"PATH": "/usr/bin:/bin", "TETHER_VAR_DIR": str(tmp_path), **env}
    result = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr}
    return json.loads(result.stdout)


PRODUCTION = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x", "REDIS_URL": "redis://127.0.0.1:6379/0",
              "SECRET_KEY": "k" * 40}


def test_production_mode_pools_its_database_connections_by_default(tmp_path):
    """Django's persistent connections are per thread, and ASGI servers make threads: the pool (with
    its bound) is the default, and HTTP is served by a fixed set of threads."""
    got = _settings_in_a_fresh_process(tmp_path, **PRODUCTION)
    assert got["pool"]["max_size"] == 8 and got["pool"]["min_size"] == 1 and got["conn_max_age"] == 0
    assert (got["http"], got["threads"], got["long_poll_threads"]) == ("wsgi", 4, 64)
    assert got["redis_timeout"] <= 0.25
    off = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_POOL="0")
    assert off["pool"] is None and off["conn_max_age"] == 60


def test_the_pool_checks_connections_itself_skipping_those_used_moments_ago(tmp_path):
    """The pool's own check (config/dbpool), not Django's: Django 5.2 would pass a second `check`."""
    got = _settings_in_a_fresh_process(tmp_path, **PRODUCTION)
    assert got["pool"]["check"] == "RecentUseCheck(bypass_seconds=0.5)"
    assert (got["engine"], got["health_checks"]) == ("config.dbpool", False)
    got = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_POOL_CHECK_BYPASS_SECONDS="0")
    assert got["pool"]["check"] == "RecentUseCheck(bypass_seconds=0.0)"
    bad = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_POOL_CHECK_BYPASS_SECONDS="-0.5")
    assert "TETHER_DB_POOL_CHECK_BYPASS_SECONDS=-0.5 is below the minimum 0.0" in bad["error"]
    # Without the pool, Django's backend and its check of a persistent connection, as before.
    off = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_POOL="0")
    assert (off["engine"], off["health_checks"]) == ("django.db.backends.postgresql", True)


def test_postgresql_binds_values_on_the_server_and_prepares_the_hot_statements(tmp_path):
    """Server-side binding with psycopg's automatic prepared statements (Django leaves both off):
    PostgreSQL plans each hot statement once per connection (issue 15); TETHER_DB_SERVER_BINDING=0
    goes back to Django's default."""
    got = _settings_in_a_fresh_process(tmp_path, **PRODUCTION)
    assert (got["binding"], got["prepare"]) == (True, 5)
    got = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_PREPARE_THRESHOLD="2")
    assert (got["binding"], got["prepare"]) == (True, 2)
    off = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_SERVER_BINDING="0")
    assert (off["binding"], off["prepare"]) == (None, None)
    sqlite = _settings_in_a_fresh_process(tmp_path, SECRET_KEY="k" * 40)
    assert (sqlite["binding"], sqlite["prepare"]) == (None, None)


def test_pool_bounds_and_handler_are_checked_at_start_up(tmp_path):
    bad = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_DB_POOL_MIN_SIZE="9", TETHER_DB_POOL_MAX_SIZE="4")
    assert "TETHER_DB_POOL_MIN_SIZE=9 is above" in bad["error"]
    bad = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_HTTP_HANDLER="gevent")
    assert "TETHER_HTTP_HANDLER" in bad["error"]
    # The in-memory channel layer needs the ASGI handler (events are published on the server's loop).
    assert _settings_in_a_fresh_process(tmp_path)["http"] == "asgi"
    bad = _settings_in_a_fresh_process(tmp_path, TETHER_HTTP_HANDLER="wsgi")
    assert "needs REDIS_URL" in bad["error"]


def test_a_cache_entry_never_outlives_a_reconcile_interval(tmp_path):
    assert _settings_in_a_fresh_process(tmp_path, **PRODUCTION)["cache_seconds"] == 30
    got = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_JOB_RECONCILE_INTERVAL_SECONDS="5")
    assert got["cache_seconds"] == 5
    bad = _settings_in_a_fresh_process(tmp_path, **PRODUCTION, TETHER_JOB_RECONCILE_INTERVAL_SECONDS="5",
                                       TETHER_ASSIGNMENT_CACHE_SECONDS="60")
    assert "would outlive a reconcile interval" in bad["error"]


@pytest.mark.redis
def test_while_redis_is_skipped_after_a_timeout_the_cache_logs_no_traceback_per_command(monkeypatch, caplog):
    """On a saturated server a Redis timeout starts the guard's pause; every cache command in it
    fails at once, and django-redis logged each with a traceback (1,127 in one bench minute)."""
    import logging
    import time

    from django.core.cache import cache

    from config import redis_guard

    monkeypatch.setattr(redis_guard, "_skip_until", time.monotonic() + 60)
    with caplog.at_level(logging.INFO):
        assert cache.get("tether-test-anything") is None  # failed open, as before
        cache.set("tether-test-anything", 1)
    assert [r for r in caplog.records if r.name == "django_redis.cache"] == []


def test_other_redis_errors_the_cache_ignores_are_still_logged():
    import logging

    from redis.exceptions import ConnectionError as RedisConnectionError

    from config.logfilters import QuietRedisBackoff
    from config.redis_guard import RedisBackingOff

    def record_for(error):
        try:
            try:
                raise error
            except Exception as exc:
                raise RuntimeError("ConnectionInterrupted") from exc
        except RuntimeError as wrapped:
            return logging.LogRecord("django_redis.cache", logging.ERROR, __file__, 1, "Exception ignored", (),
                                     (type(wrapped), wrapped, wrapped.__traceback__))

    assert QuietRedisBackoff().filter(record_for(RedisConnectionError("Connection refused"))) is True
    assert QuietRedisBackoff().filter(record_for(RedisBackingOff("pause"))) is False


def test_a_serve_worker_freezes_its_startup_heap_and_raises_the_collector_threshold(tmp_path):
    """config/serve.py's workers: the URLconf's views imported, the startup heap frozen out of the
    collector's passes, the first threshold from TETHER_GC_THRESHOLD."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import django, gc, json, sys; django.setup(); from config.serve import tune_garbage_collector; "
            "frozen = tune_garbage_collector(); print(json.dumps({'frozen': frozen, 'threshold': gc.get_threshold(), "
            "'views': 'assignments.api.views' in sys.modules, 'young': len(gc.get_objects(0))}))")
    env = {"PATH": os.environ["PATH"], "TETHER_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings",
           "TETHER_GC_THRESHOLD": "4321"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["views"] is True
    assert got["frozen"] > 50_000  # Django, DRF and every app: what a full pass no longer walks
    assert got["young"] < 1000
    assert got["threshold"][0] == 4321
    bad = _settings_in_a_fresh_process(tmp_path, TETHER_GC_THRESHOLD="10")
    assert "TETHER_GC_THRESHOLD" in bad["error"]
