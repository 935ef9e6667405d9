"""A short-circuit for Redis on the request path (the cache and the throttle, through django-redis).

A hung Redis (stopped, partitioned, swapping) answers nothing: every command waits its full socket
timeout. The cache and the throttle fail open, so a request survives — but it pays that timeout for
each Redis command it makes (a throttle count, a cache read, a cache refresh). `GuardedConnection`
keeps one process-wide note: once a command of this process timed out, every command in the next
TETHER_REDIS_BACKOFF_SECONDS fails at once (redis ConnectionError, which the cache ignores and the
throttle lets through), so a hung Redis costs one request one timeout and the others nothing. After
the pause the next command tries Redis again. Used through CACHES' CONNECTION_POOL_KWARGS
(config/settings.py); the channel layer and Celery have their own connections and timeouts.
"""

import logging
import time

from django.conf import settings
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

_skip_until = 0.0  # monotonic time; a float assignment is atomic, so threads share it without a lock


def redis_backing_off() -> bool:
    return time.monotonic() < _skip_until


class RedisBackingOff(RedisConnectionError):
    """A command not sent because Redis timed out moments ago (the pause). django-redis logs every
    ignored exception with its traceback; these are dropped from that log
    (`config.logfilters.QuietRedisBackoff`): the timeout that started the pause was logged once, and
    a traceback per request during it cost the busy server more CPU than the requests themselves."""


def _check() -> None:
    if redis_backing_off():
        raise RedisBackingOff("Redis timed out moments ago; not asked again until the pause ends")


def _trip() -> None:
    global _skip_until
    if not redis_backing_off():
        log.warning("Redis timed out: the cache and the throttle skip it for %.1f s", settings.TETHER_REDIS_BACKOFF_SECONDS)
    _skip_until = time.monotonic() + settings.TETHER_REDIS_BACKOFF_SECONDS


class GuardedConnection(Connection):
    def send_packed_command(self, command, check_health=True):
        _check()
        try:
            return super().send_packed_command(command, check_health)
        except RedisTimeoutError:
            _trip()
            raise

    def read_response(self, *args, **kwargs):
        _check()
        try:
            return super().read_response(*args, **kwargs)
        except RedisTimeoutError:
            _trip()
            raise
