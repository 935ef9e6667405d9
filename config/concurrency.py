"""How many of a web process's request threads run at once.

`make serve` gives each process TETHER_HTTP_THREADS threads for requests (config/wsgi_threads.py):
that many requests can be in progress, long-polls parked among them. But the threads share one
GIL, and with 32 of them runnable the process spent its CPU handing the GIL around: `make bench` at
32 clients with 8 threads per process instead of 32 took and released at 467 req/s instead of 372,
2.5 ms of server CPU a request instead of 3.1 (heartbeats 611 against 512 req/s), the same run
otherwise. So a request runs only while it holds one of TETHER_HTTP_ACTIVE_THREADS slots, and a
request that waits on purpose — a long-poll between its looks (`idle()`) — gives its slot back
while it sleeps, so parked long-polls never keep the others from running.

A slot is taken before the application runs and given back after its response is built, so a
transaction (and every row lock it takes) lives inside a slot: a request waiting for a lock always
waits for one that is running. `idle()` refuses to give a slot back inside a transaction for the
same reason. Outside the production bridge (Django's ASGI handler in embedded mode, tests, jobs) no
slot is held and `idle()` only sleeps.
"""

import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection

_local = threading.local()
_slots: threading.Semaphore | None = None
_slots_lock = threading.Lock()


def _reset(*, setting, **kwargs):
    global _slots
    if setting == "TETHER_HTTP_ACTIVE_THREADS":
        _slots = None  # the next request builds the new size (tests' override_settings)


setting_changed.connect(_reset)


def _semaphore() -> threading.Semaphore:
    global _slots
    if _slots is None:
        with _slots_lock:
            if _slots is None:
                _slots = threading.Semaphore(settings.TETHER_HTTP_ACTIVE_THREADS)
    return _slots


@contextmanager
def running():
    """Hold one of the process's slots while the block runs (the request bridge does this)."""
    slots = _semaphore()
    slots.acquire()
    _local.holding = True
    try:
        yield
    finally:
        _local.holding = False
        slots.release()


def sleep(seconds: float) -> None:
    """`time.sleep`, giving this thread's slot (if it holds one) to another request meanwhile."""
    if not getattr(_local, "holding", False) or connection.in_atomic_block:
        time.sleep(seconds)
        return
    slots = _semaphore()
    _local.holding = False
    slots.release()
    try:
        time.sleep(seconds)
    finally:
        slots.acquire()
        _local.holding = True
