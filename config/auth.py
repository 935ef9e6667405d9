"""Who a bearer token belongs to — shared by the REST API's authentication and the WebSocket's.

Agent tokens (`agt_…`, from registration) are stored as SHA-256 and looked up by hash. Any other
token is a user's API token (DRF's authtoken, made in the admin or with `drf_create_token`).
"""

from dataclasses import dataclass

from django.db import connection

from agents.models import Agent
from config.tokens import token_hash
from pools.models import AgentPool


@dataclass(frozen=True)
class Principal:
    kind: str  # "agent" or "user"
    agent: Agent | None = None
    user: object | None = None


# Every agent request runs this, so it reads only what callers use (who the agent is, its pool's
# name), by the unique token_hash index, as a named statement: the ORM's query compilation cost more
# than the query. Never cached in process: a re-registered agent's old token must fail at once.
AGENT_BY_TOKEN_SQL = """
SELECT a.id, a.agent_id, a.pool_id, p.name
FROM agents_agent a JOIN pools_agentpool p ON p.id = a.pool_id
WHERE a.token_hash = %s
"""


def _agent_for_token_hash(hashed: str) -> Agent | None:
    """The agent with this token, with only its key, agent_id and pool (pk, name) loaded; any other
    field is deferred (read from the database if a caller touches it)."""
    with connection.cursor() as cursor:
        cursor.execute(AGENT_BY_TOKEN_SQL, [hashed])
        row = cursor.fetchone()
    if row is None:
        return None
    pk, agent_id, pool_pk, pool_name = row
    agent = Agent.from_db(connection.alias, ["id", "agent_id", "pool_id"], [pk, agent_id, pool_pk])
    agent.pool = AgentPool.from_db(connection.alias, ["id", "name"], [pool_pk, pool_name])
    return agent


def principal_for_token(key: str, *, hashed: str | None = None) -> Principal | None:
    """`hashed` is `token_hash(key)` when the caller has computed it already (the REST API's
    authentication keys its throttle counter by it): not hashed a second time."""
    if not key or len(key) > 200 or not key.isascii() or not key.isprintable():
        return None  # every token we issue is printable ASCII; a NUL would not even reach the query
    if key.startswith("agt_"):
        agent = _agent_for_token_hash(hashed or token_hash(key))
        return Principal("agent", agent=agent) if agent is not None else None
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return Principal("user", user=token.user)
