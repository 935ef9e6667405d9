"""The pool's check before it hands a connection out, skipped for one handed out moments ago
(config/dbpool, issue 15): on PostgreSQL, with psycopg's pool built as Django builds it."""

import time
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper as DjangoWrapper
from psycopg_pool import ConnectionPool

from config.dbpool import RecentUseCheck
from config.dbpool.base import DatabaseWrapper

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

LONG = 60.0  # a window no test outlasts, however loaded the machine
SHORT = 0.2


@pytest.fixture
def checks(monkeypatch):
    """The backend pids the pool's check queried (each one empty query, one round trip)."""
    calls = []
    original = ConnectionPool.check_connection

    def counting(conn):
        calls.append(conn.info.backend_pid)
        return original(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
    return calls


@contextmanager
def _pool(bypass_seconds):
    """One connection, so that every getconn hands out the same one while it lives."""
    kwargs = {**connection.get_connection_params(), "autocommit": True}
    pool = ConnectionPool(kwargs=kwargs, min_size=1, max_size=1, timeout=10, open=False,
                          check=RecentUseCheck(bypass_seconds))
    pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        pool.close()


def _use(pool) -> int:
    """Check a connection out, run a query on it, give it back: its backend pid."""
    with pool.connection() as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True


def test_a_connection_handed_out_moments_ago_is_not_checked_again(checks):
    with _pool(LONG) as pool:
        first = _use(pool)
        assert checks == [first]  # never handed out before: checked
        assert _use(pool) == first and _use(pool) == first
        assert checks == [first]


def test_after_the_window_the_connection_is_checked(checks):
    with _pool(SHORT) as pool:
        first = _use(pool)
        time.sleep(SHORT + 0.1)
        assert _use(pool) == first
        assert checks == [first, first]


def test_zero_checks_every_time(checks):
    with _pool(0) as pool:
        pids = [_use(pool) for _ in range(3)]
        assert checks == pids


def test_a_backend_killed_longer_ago_than_the_window_is_replaced_unseen(checks):
    with _pool(SHORT) as pool:
        killed = _use(pool)
        _terminate(killed)
        time.sleep(SHORT + 0.1)
        replacement = _use(pool)  # the check fails, the pool discards it and hands out a new one
        assert replacement != killed
        assert checks[0] == killed and checks[-1] == replacement


def test_a_backend_killed_within_the_window_costs_one_error_then_is_replaced(checks):
    """The window's price, as config/settings.py says: the next use of that connection fails; given
    back broken, the pool discards it, and the request after gets a new one."""
    with _pool(LONG) as pool:
        killed = _use(pool)
        _terminate(killed)
        with pytest.raises(psycopg.OperationalError):
            _use(pool)
        assert _use(pool) != killed
        assert checks.count(killed) == 1  # handed out the second time unchecked


def test_a_connection_known_to_be_closed_fails_without_a_query(checks):
    conn = psycopg.connect(**{**connection.get_connection_params(), "autocommit": True})
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        RecentUseCheck(LONG)(conn)
    assert checks == []
    with pytest.raises(ValueError):
        RecentUseCheck(-1)


def _settings(check):
    return {**connection.settings_dict, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False,
            "OPTIONS": {**connection.settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 1, "check": check}}}


def test_django_52_cannot_take_a_check_from_the_pool_options():
    """Why config.dbpool is a backend: Django passes `check=` itself beside the options. When this
    fails, Django takes the options' check (ticket #37075): config/dbpool/base.py can go."""
    with pytest.raises(TypeError, match="multiple values for keyword argument 'check'"):
        DjangoWrapper(_settings(RecentUseCheck(LONG)), alias="dbpool-django").pool


def test_the_backend_hands_its_pool_the_check_from_the_options(checks):
    wrapper = DatabaseWrapper(_settings(RecentUseCheck(LONG)), alias="dbpool-test")
    try:
        pids = []
        for _ in range(3):  # a request each: connect, query, close (back to the pool)
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            wrapper.close()
        assert len(set(pids)) == 1
        assert checks == pids[:1]
    finally:
        wrapper.close_pool()
