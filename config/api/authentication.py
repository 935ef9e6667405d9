"""Who is calling: `Authorization: Token <key>` (an agent's token or a user's DRF token, resolved by
`config.auth.principal_for_token`), or the browser's session cookie (DRF's SessionAuthentication,
which enforces CSRF on unsafe methods).

An authenticated agent is represented by an `AgentUser` in `request.user`, so DRF's permission
machinery works unchanged; `request_actor(request)` turns either kind into the services' `Actor`.
"""

import re

from rest_framework import authentication, exceptions

from django.conf import settings

from config.actors import Actor
from config.auth import principal_for_token
from config.ratelimit import FixedWindow, client_address

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
        wait = _failures().exhausted(address)
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail="too many failed authentications from this address")
        if len(parts) != 2 or not _TOKEN_RE.match(parts[1]):
            _failures().hit(address)
            raise exceptions.AuthenticationFailed("malformed Authorization header: use 'Token <key>'")
        principal = principal_for_token(parts[1])
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
