"""Who is calling: `Authorization: Token <key>` (an agent's token or a user's DRF token, resolved by
`config.auth.principal_for_token`), or the browser's session cookie (DRF's SessionAuthentication,
which enforces CSRF on unsafe methods).

An authenticated agent is represented by an `AgentUser` in `request.user`, so DRF's permission
machinery works unchanged; `request_actor(request)` turns either kind into the services' `Actor`.

What a request with a token costs before its view runs: one Redis round trip — the failed-
authentication check of its address and the credential throttle's count, in one pipeline (the
throttle reads the count this module leaves on the request, config/api/throttling.py) — then one
PostgreSQL statement, the token's lookup. A refused address costs the round trip and nothing else.
"""

import re
from time import time as _now

from rest_framework import authentication, exceptions
from rest_framework.settings import api_settings

from django.conf import settings

from config.actors import Actor
from config.auth import principal_for_token
from config.ratelimit import COUNTED_ATTRIBUTE, Counted, FixedWindow, client_address, parse_rate
from config.tokens import token_hash

# The scope of the credential throttle (config/api/throttling.py), whose counter a request with a
# token has counted here already.
THROTTLE_SCOPE = "credential"

# Agent tokens (`agt_` + urlsafe base64) and DRF keys (hex) both fit; anything else cannot be a token
# and is refused before it reaches the database (NUL bytes, odd unicode...).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")


class AgentUser:
    """`request.user` for a request made with an agent's token."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, agent):
        self.agent = agent
        self.pk = None

    def get_username(self) -> str:
        return self.agent.agent_id

    def __str__(self) -> str:
        return f"agent:{self.agent.agent_id}"


def _failures() -> FixedWindow:
    return FixedWindow("auth-failures", settings.TETHER_API_AUTH_FAILURE_RATE)


def _throttle_period() -> int | None:
    """The credential throttle's window in seconds, or None when it has no rate (switched off)."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(THROTTLE_SCOPE)
    return parse_rate(rate)[1] if rate else None


def _exhausted_and_count(request, address: str, hashed: str) -> float | None:
    """`_failures().exhausted(address)`, and in the same Redis round trip the credential throttle's
    count for this token, left on the request for the throttle.

    The credential is not known before the lookup, so the counter is the token's own, named by its
    digest (the token itself never reaches Redis). An agent has one token and a user one API token,
    so it counts the credential's requests; a re-registered agent has a new token and a fresh
    counter (its old token is refused with 401 anyway). An invalid token counts against a counter
    no credential owns, which expires with its window: harmless — the failure limit of its address
    is what stops a guesser. A request refused for its address's failures has been counted too: it
    was one more request."""
    period = _throttle_period()
    if period is None:
        return _failures().exhausted(address)
    window = int(_now() // period)
    counter = f"throttle:{THROTTLE_SCOPE}:tok:{hashed[:32]}:{window}"
    wait, used = _failures().exhausted_and_count(address, counter, period + 1)
    setattr(getattr(request, "_request", request), COUNTED_ATTRIBUTE, Counted(THROTTLE_SCOPE, period, window, used))
    return wait


def _refuse_if_exhausted(wait: float | None) -> None:
    if wait is not None:
        raise exceptions.Throttled(wait=wait, detail="too many failed authentications from this address")


class TokenAuthentication(authentication.BaseAuthentication):
    """A client address that sent too many invalid tokens (TETHER_API_AUTH_FAILURE_RATE) gets 429
    for every token it sends until the window ends — before any lookup: guessing costs the guesser,
    not the database. (The credential throttle cannot see these requests: they never authenticate.)"""

    keyword = "Token"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if not parts or parts[0].lower() not in ("token", "bearer"):
            return None
        address = client_address(request)
        if len(parts) != 2 or not _TOKEN_RE.match(parts[1]):
            _refuse_if_exhausted(_failures().exhausted(address))
            _failures().hit(address)
            raise exceptions.AuthenticationFailed("malformed Authorization header: use 'Token <key>'")
        key = parts[1]
        hashed = token_hash(key)  # once: the throttle's counter and the agent lookup both use it
        _refuse_if_exhausted(_exhausted_and_count(request, address, hashed))
        principal = principal_for_token(key, hashed=hashed)
        if principal is None:
            _failures().hit(address)
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        if principal.kind == "agent":
            return AgentUser(principal.agent), principal
        return principal.user, principal

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return self.keyword


def request_agent(request):
    user = getattr(request, "user", None)
    return user.agent if isinstance(user, AgentUser) else None


def request_actor(request) -> Actor:
    """The services' Actor for this request (computed once: the operator check may cost a query)."""
    actor = getattr(request, "_tether_actor", None)
    if actor is None:
        agent = request_agent(request)
        actor = Actor.for_agent(agent.agent_id) if agent is not None else Actor.for_user(request.user)
        request._tether_actor = actor
    return actor


def credential_scope(request) -> str | None:
    """A stable name for the credential behind a request (throttling, idempotency), or None."""
    agent = request_agent(request)
    if agent is not None:
        return f"agent:{agent.pk}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return None
