"""The default cache, one backend object per thread, for code on every request's path.

Django keeps `caches[...]` (and so `django.core.cache.cache`) in an asgiref `Local` that is not
thread-critical: a context variable. A server that runs each request in a fresh copy of a context
(a2wsgi did, as production's HTTP bridge until config/wsgi_threads.py; Django's ASGI handler, which
serves HTTP in embedded mode, still does) builds a new backend object — and django-redis a new
client, its options parsed and its classes imported again — the first time each request touches the
cache: ~0.1 ms of a ~3 ms take or release (measured: 0.15–0.18 ms per call in a fresh context against
0.04–0.06 in a kept one), on every API request (its throttle counter).

Here each thread keeps its own, as Django did before contexts: the server's request threads are a
fixed pool, so each builds one. A backend object is not shared between threads (Django's own rule),
and the connections behind it are django-redis's process-wide pool, as before. A change of the
CACHES setting (tests' `override_settings`) makes every thread build a new one.
"""

import threading

from django.core.cache import caches
from django.core.signals import setting_changed

_local = threading.local()
_generation = 0


def _reset(*, setting, **kwargs):
    global _generation
    if setting == "CACHES":
        _generation += 1


setting_changed.connect(_reset)


def default_cache():
    """This thread's backend object for the default cache."""
    held = getattr(_local, "held", None)
    if held is None or held[0] != _generation:
        held = _local.held = (_generation, caches.create_connection("default"))
    return held[1]


class _ThreadCache:
    """`cache.get(...)` etc. on this thread's backend: a drop-in for `django.core.cache.cache`."""

    def __getattr__(self, name):
        return getattr(default_cache(), name)


cache = _ThreadCache()
