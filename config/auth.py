"""Who a bearer token belongs to — shared by the REST API's authentication and the WebSocket's.

Agent tokens (`agt_…`, from registration) are stored as SHA-256 and looked up by hash. Any other
token is a user's API token (DRF's authtoken, made in the admin or with `drf_create_token`).
"""

from dataclasses import dataclass

from agents.models import Agent
from config.tokens import token_hash


@dataclass(frozen=True)
class Principal:
    kind: str  # "agent" or "user"
    agent: Agent | None = None
    user: object | None = None


def principal_for_token(key: str) -> Principal | None:
    if not key or len(key) > 200 or not key.isascii() or not key.isprintable():
        return None  # every token we issue is printable ASCII; a NUL would not even reach the query
    if key.startswith("agt_"):
        agent = Agent.objects.select_related("pool").filter(token_hash=token_hash(key)).first()
        return Principal("agent", agent=agent) if agent is not None else None
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return Principal("user", user=token.user)
