"""config/caching.py: the request path's cache backend, one object per thread."""

import contextvars
import threading

from django.core.cache import caches
from django.test import override_settings

from config.caching import cache, default_cache


def test_one_backend_per_thread_whatever_the_context():
    """Django's own `caches` builds one per context; a server that copies a context per request
    would pay for a new one every request."""
    # The objects themselves are kept (not their id()s): a freed object's id can be a later one's.
    in_fresh_contexts = [contextvars.Context().run(default_cache) for _ in range(3)]
    assert all(backend is in_fresh_contexts[0] for backend in in_fresh_contexts)
    djangos = [contextvars.Context().run(lambda: caches["default"]) for _ in range(3)]
    assert len({id(backend) for backend in djangos}) == 3  # the reason

    other = []
    thread = threading.Thread(target=lambda: other.append(default_cache()))
    thread.start()
    thread.join()
    assert other[0] is not default_cache()


def test_the_proxy_reads_and_writes_the_default_cache():
    cache.set("caching-test", {"a": 1}, 30)
    assert caches["default"].get("caching-test") == {"a": 1}
    caches["default"].delete("caching-test")


def test_a_new_caches_setting_gets_a_new_backend():
    before = default_cache()
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                               "LOCATION": "caching-test"}}):
        inside = default_cache()
        assert inside is not before
        assert type(inside).__name__ == "LocMemCache"
    assert default_cache() is not inside
