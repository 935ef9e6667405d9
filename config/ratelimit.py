"""Where a request comes from, and the fixed-window counters the API's throttles and the
failed-authentication limit share.

The client's address is REMOTE_ADDR — unless the request came through one of our own proxies
(TETHER_TRUSTED_PROXIES: addresses or networks). Only then is `X-Forwarded-For` read, from the
right (the hop our proxy added) leftwards, skipping our own proxies: the first other address is the
client. A client can write anything into that header, so without a trusted proxy it is ignored —
otherwise rotating it would get past every per-address limit.

A counter is one Redis round trip (INCR + EXPIRE in a pipeline). A request with a token needs two
answers — has its address sent too many invalid tokens, and how many requests has its credential
made in this window — and gets both in one round trip (`FixedWindow.exhausted_and_count`: GET, INCR
and EXPIRE in one pipeline); the throttle reads that count (`Counted`) instead of counting again.
So every API request pays one Redis round trip for these limits: a token's (two before this), a
session's or an anonymous one (the throttle's count). Only a refused token pays a second (the hit).
Callers fail open when Redis is down: the database, not the throttle, is what must stay up.
"""

import ipaddress
import logging
from dataclasses import dataclass
from functools import lru_cache
from time import time as _now

from django.conf import settings

from config.caching import cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _address(value: str):
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _is_trusted(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(request) -> str:
    """The address of the client behind this request (see the module docstring)."""
    remote = request.META.get("REMOTE_ADDR") or ""
    networks = _networks(tuple(settings.TETHER_TRUSTED_PROXIES))
    if not networks or not _is_trusted(_address(remote), networks):
        return remote or "unknown"
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # not an address: nothing left of it can be believed; the last proxy is the client
        if not _is_trusted(address, networks):
            return str(address)
        remote = str(address)
    return remote


def client_ip(request) -> str | None:
    """`client_address` when it is an IP address, else None (django-axes stores it as one)."""
    address = _address(client_address(request))
    return str(address) if address is not None else None


def _redis():
    """The cache's own Redis client (so its guard, timeouts and key prefix apply); only with REDIS_URL.
    This thread's (config/caching.py), not `get_redis_connection`'s, which builds one per request."""
    return cache.client.get_client(write=True)


def count(key: str, ttl: int) -> int:
    """Add one to the counter `key` (expiring after `ttl` seconds) and return its new value."""
    full_key = cache.make_key(key)
    if getattr(settings, "REDIS_URL", None):
        pipe = _redis().pipeline(transaction=False)
        pipe.incr(full_key)
        pipe.expire(full_key, ttl)
        return int(pipe.execute()[0])
    cache.add(key, 0, ttl)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, ttl)
        return 1


def parse_rate(rate: str) -> tuple[int, int]:
    """'30/min' → (30, 60), as DRF reads its rates."""
    number, period = rate.split("/")
    return int(number), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


class FixedWindow:
    """At most `rate` hits of one key per window (e.g. failed authentications of one address)."""

    def __init__(self, name: str, rate: str):
        self.name = name
        self.limit, self.period = parse_rate(rate)

    def _key(self, ident: str) -> tuple[str, float]:
        now = _now()
        window = int(now // self.period)
        return f"ratelimit:{self.name}:{ident}:{window}", (window + 1) * self.period - now

    def exhausted(self, ident: str) -> float | None:
        """Seconds until the window ends when `ident` has used up its hits, else None."""
        key, wait = self._key(ident)
        try:
            used = cache.get(key) or 0
        except Exception:  # noqa: BLE001 — fail open
            return None
        return wait if int(used) >= self.limit else None

    def exhausted_and_count(self, ident: str, counter: str, ttl: int) -> tuple[float | None, int | None]:
        """`exhausted(ident)` and `count(counter, ttl)` in one Redis round trip instead of two: the
        token path of every API request asks both (config/api/authentication.py). Fails open as they
        do: (None, None) when Redis is down or skipped after a timeout (config/redis_guard.py)."""
        if not getattr(settings, "REDIS_URL", None):
            # The in-process cache (the embedded mode) has no round trip to save: the two calls.
            wait = self.exhausted(ident)
            try:
                return wait, count(counter, ttl)
            except Exception:  # noqa: BLE001 — fail open
                log.warning("rate limit counter unavailable", exc_info=True)
                return wait, None
        key, wait = self._key(ident)
        full_counter = cache.make_key(counter)
        try:
            pipe = _redis().pipeline(transaction=False)
            pipe.get(cache.make_key(key))
            pipe.incr(full_counter)
            pipe.expire(full_counter, ttl)
            failures, used, _ = pipe.execute()
        except Exception:  # noqa: BLE001 — fail open
            log.warning("rate limit counters unavailable; request allowed", exc_info=True)
            return None, None
        return (wait if int(failures or 0) >= self.limit else None), int(used)

    def hit(self, ident: str) -> None:
        key, _ = self._key(ident)
        try:
            count(key, self.period + 1)
        except Exception:  # noqa: BLE001 — fail open
            log.warning("rate limit counter unavailable", exc_info=True)


# The attribute of Django's HttpRequest that carries a `Counted` from the authentication to the
# throttle (DRF's Request passes attribute reads through to it).
COUNTED_ATTRIBUTE = "tether_throttle_counted"


@dataclass(frozen=True)
class Counted:
    """A throttle counter this request has already added itself to: the throttle of `scope` uses
    `used` when its own period and window are these, instead of counting a second time. `used` is
    None when Redis could not be asked — the throttle then lets the request through without asking
    again (one timeout per request at most, not two)."""

    scope: str
    period: int
    window: int
    used: int | None
