"""Throttling per credential (agent token, user), or per client address when anonymous (the real
one: `config.ratelimit.client_address` reads X-Forwarded-For only from trusted proxies).
A refused request gets 429 `throttled` with `Retry-After` (set by DRF from `wait()`).

A fixed-window counter (INCR + EXPIRE in a pipeline) instead of DRF's default history list (a GET
and a SET of a pickled list that grows with the rate: at thousands of requests a minute it costs
more than the request it guards). A request with a token was counted already, by its token, in the
Redis round trip of the failed-authentication check (config/api/authentication.py): the throttle
reads that count from the request and asks Redis nothing. Other requests (a session, anonymous) are
counted here, by user or by address: one round trip. Fails open when Redis is down: the database,
not the throttle, is what must stay up.
"""

import logging
from time import time as _now

from rest_framework.throttling import SimpleRateThrottle

from config.api.authentication import THROTTLE_SCOPE, credential_scope
from config.ratelimit import COUNTED_ATTRIBUTE, client_address, count

log = logging.getLogger(__name__)


class CredentialRateThrottle(SimpleRateThrottle):
    scope = THROTTLE_SCOPE

    def get_ident(self, request):
        # The real client address (config/ratelimit.py), never a client-written X-Forwarded-For.
        return client_address(request)

    def get_cache_key(self, request, view):
        ident = credential_scope(request) or f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        now = _now()
        window = int(now // self.duration)
        # DRF's Request reads through to Django's, where the authentication left its count.
        counted = getattr(request, COUNTED_ATTRIBUTE, None)
        if counted is not None and (counted.scope, counted.period, counted.window) == (self.scope, self.duration, window):
            if counted.used is None:
                return True  # Redis failed the authentication's round trip moments ago: fail open
            used = counted.used
        else:
            # No count yet, or one for another window (a boundary passed since): count here.
            key = f"{self.get_cache_key(request, view)}:{window}"
            try:
                used = count(key, int(self.duration) + 1)
            except Exception:  # noqa: BLE001 — fail open, see module docstring
                log.warning("throttle counter unavailable; request allowed", exc_info=True)
                return True
        if used > self.num_requests:
            self._wait = (window + 1) * self.duration - now
            return False
        return True

    def wait(self):
        return getattr(self, "_wait", None)
