import threading

import pytest
from django.conf import settings
from django.db import connections

from config.actors import Actor
from dashboard.publish import publish_flush

_SKIP_REASONS = {
    "postgres": "needs PostgreSQL (row locks and concurrent connections); none reachable at 127.0.0.1:5432 "
    "and DATABASE_URL is not set — SQLite would hide the race this test exists for",
    "redis": "needs Redis; none reachable at 127.0.0.1:6379 and REDIS_URL is not set",
}


def pytest_report_header(config):
    db = settings.DATABASES["default"]
    return [
        f"tether backends: database={db['ENGINE'].rsplit('.', 1)[-1]} ({db.get('HOST') or db['NAME']}), "
        f"redis={'yes (' + settings.REDIS_URL + ')' if settings.TEST_ON_REDIS else 'no — Redis tests will be skipped'}"
    ]


def pytest_collection_modifyitems(config, items):
    available = {"postgres": settings.TEST_ON_POSTGRES, "redis": settings.TEST_ON_REDIS}
    for item in items:
        for name, ok in available.items():
            if not ok and item.get_closest_marker(name):
                item.add_marker(pytest.mark.skip(reason=_SKIP_REASONS[name]))


@pytest.fixture(autouse=True)
def _publications_finish_within_their_test():
    """Publishing is off the request (dashboard/publish.py: a queue one sender drains): let what a
    test published reach the channel layer before the next test subscribes, so no test hears
    another's events."""
    yield
    publish_flush()


@pytest.fixture
def operator_actor():
    return Actor.system("test-operator")


@pytest.fixture
def run_in_threads():
    """Run `fn(i)` in `n` real threads, each on its own database connection, started together.
    Returns the results (or exceptions) in thread order."""

    def run(n, fn):
        barrier = threading.Barrier(n)
        results = [None] * n

        def worker(i):
            try:
                barrier.wait(timeout=30)
                results[i] = fn(i)
            except BaseException as exc:  # noqa: BLE001 — handed back to the test to assert on
                results[i] = exc
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
        return results

    return run
