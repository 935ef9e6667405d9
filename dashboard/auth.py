"""WebSocket authentication: the session (Channels' AuthMiddlewareStack) or an API token.

`TokenAuthMiddleware` reads a token from `?token=` or an `Authorization: Token <key>` (or `Bearer`)
header and resolves it with `config.auth.principal_for_token`, the same lookup the REST API uses.
It puts `scope["principal"]` (a Principal, or None when a token was given but is not valid) and
`scope["token_given"]`; consumers decide what to refuse.

`OriginValidator`: a browser always sends `Origin` on a WebSocket handshake, so a handshake from a
page of another site is refused (it would otherwise ride on the operator's session cookie). A
handshake without `Origin` comes from a program (an agent) and is let through: it must still
present a credential. Channels' AllowedHostsOriginValidator refuses those, and with them every agent.
"""

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator as _ChannelsOriginValidator
from django.conf import settings

from config.auth import principal_for_token


def token_from_scope(scope) -> str | None:
    """The token a WebSocket handshake carries, or None. The header wins over the query string."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin1").strip().partition(" ")
            if scheme.lower() in ("token", "bearer") and key.strip():
                return key.strip()
            return ""  # an Authorization header we cannot read: a credential, and not a valid one
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    if "token" in query:
        return query["token"][-1].strip()
    return None


class TokenAuthMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        key = token_from_scope(scope)
        principal = await database_sync_to_async(principal_for_token, thread_sensitive=False)(key) if key else None
        scope = dict(scope, principal=principal, token_given=key is not None)
        return await self.app(scope, receive, send)


class OriginValidator(_ChannelsOriginValidator):
    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def AllowedHostsOriginValidator(app):  # noqa: N802 — mirrors Channels' factory of the same name
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return OriginValidator(app, allowed)
