"""Logging filters named in settings.LOGGING."""

import logging

from config.redis_guard import RedisBackingOff


class QuietDisallowedHost(logging.Filter):
    """A request with a Host header not in ALLOWED_HOSTS is the client's mistake (or a scanner's),
    answered 400: one WARNING line, not an ERROR with a traceback per request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = None
        record.exc_text = None
        return True


class QuietRedisBackoff(logging.Filter):
    """django-redis logs each Redis error it ignores at ERROR with a traceback. During the guard's
    pause (config/redis_guard.py) every cache and throttle command fails at once by design, and the
    pause's start was logged: those records are dropped. (On a saturated server a traceback per
    request, over a thousand in a minute, made the overload worse.) Other Redis errors still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        seen = 0
        while error is not None and seen < 8:
            if isinstance(error, RedisBackingOff):
                return False
            error = error.__cause__ or error.__context__
            seen += 1
        return True
