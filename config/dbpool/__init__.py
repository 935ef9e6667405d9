"""The pool's check of a connection before it hands it out, skipped for one handed out moments ago.

psycopg's pool can check each connection it hands out with an empty query, so that a backend killed
since (a PostgreSQL restart, `pg_terminate_backend`, a dropped TCP connection) costs a reconnect
instead of a failed request. On the API's hot path that check is a PostgreSQL round trip per
request, for a connection that, under load, was handed out a few milliseconds before. Pools commonly
skip the check for a connection used within a short window (HikariCP's `aliveBypassWindowMs`, 500 ms
by default); `RecentUseCheck` does the same, with TETHER_DB_POOL_CHECK_BYPASS_SECONDS.

It counts from when the connection was last handed out, not from when it came back: the request
used it after that, so the time since its last use is shorter still — the window never skips the
check for a connection idle longer than the window.

Django 5.2 passes a `check` of its own to the pool (`ConnectionPool.check_connection` or None, by
CONN_HEALTH_CHECKS) beside OPTIONS["pool"], so a `check` in the options is a TypeError there (Django
ticket #37075, fixed after 5.2). `config.dbpool.base` is Django's PostgreSQL backend with only that
changed: ENGINE "config.dbpool" lets OPTIONS["pool"]["check"] take the place of Django's.
"""

import time

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

# Where a connection keeps the time it was last handed out (psycopg connections take attributes).
_HANDED_OUT_AT = "_tether_handed_out_at"


class RecentUseCheck:
    """A pool `check`: ConnectionPool.check_connection (one empty query), unless this connection
    was handed out less than `bypass_seconds` ago; 0 checks every time. A connection psycopg
    already knows to be closed or broken fails at once, without a query."""

    def __init__(self, bypass_seconds: float):
        if bypass_seconds < 0:
            raise ValueError(f"bypass_seconds must be 0 or more, not {bypass_seconds}")
        self.bypass_seconds = bypass_seconds

    def __call__(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
            # Raising is how a check refuses: the pool discards this one and hands out another.
            raise psycopg.OperationalError("the pooled connection is closed or broken")
        now = time.monotonic()
        last = getattr(conn, _HANDED_OUT_AT, None)
        if last is None or now - last >= self.bypass_seconds:
            ConnectionPool.check_connection(conn)
        setattr(conn, _HANDED_OUT_AT, now)

    def __repr__(self) -> str:
        return f"RecentUseCheck(bypass_seconds={self.bypass_seconds})"
