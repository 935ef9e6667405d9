"""Logging filters named in settings.LOGGING."""

import logging


class QuietDisallowedHost(logging.Filter):
    """A request with a Host header not in ALLOWED_HOSTS is the client's mistake (or a scanner's),
    answered 400: one WARNING line, not an ERROR with a traceback per request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = None
        record.exc_text = None
        return True
