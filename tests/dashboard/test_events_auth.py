"""Who may open ws://HOST/assignments/events: session or API token; refused with 4401/4403."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from agents.services import agent_deregister
from config.actors import Actor
from dashboard.consumers import CLOSE_BAD_REQUEST, CLOSE_FORBIDDEN, CLOSE_NOT_AUTHENTICATED
from tests.dashboard.events_support import (
    amake_profiles,
    application,
    closed_with,
    nothing_more,
    receive_events,
    session_cookie_for,
    ws_connect,
)
from tests.factories import AgentFactory, PoolFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.postgres]


async def _refused(path, headers=None) -> tuple[int, list[dict]]:
    communicator = await ws_connect(path, headers=headers)
    return await closed_with(communicator)


@database_sync_to_async
def _user(username="viewer", **fields):
    return get_user_model().objects.create_user(username=username, password=None, **fields)


async def test_anonymous_connection_is_closed_with_4401():
    code, messages = await _refused("/assignments/events")
    assert code == CLOSE_NOT_AUTHENTICATED
    assert messages == [{"type": "error", "error": {"code": "not_authenticated", "message": "log in or give an API token"}}]


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/assignments/events?token=agt_nobody", []),
        ("/assignments/events?token=not-a-token", []),
        ("/assignments/events", [(b"authorization", b"Token agt_nobody")]),
        ("/assignments/events", [(b"authorization", b"Basic dXNlcjpwYXNz")]),
    ],
)
async def test_invalid_token_is_closed_with_4401(path, headers):
    code, _ = await _refused(path, headers)
    assert code == CLOSE_NOT_AUTHENTICATED


async def test_invalid_token_is_refused_even_with_a_valid_session():
    user = await _user()
    code, _ = await _refused("/assignments/events?token=wrong", await database_sync_to_async(session_cookie_for)(user))
    assert code == CLOSE_NOT_AUTHENTICATED


async def test_logged_in_user_streams_by_session_cookie():
    user = await _user()
    communicator = await ws_connect(headers=await database_sync_to_async(session_cookie_for)(user))
    seqs = await amake_profiles("sess", 2)
    assert [e["seq"] for e in await receive_events(communicator, 2)] == seqs
    await communicator.disconnect()


async def test_inactive_user_session_is_refused():
    user = await _user(is_active=False)
    code, _ = await _refused("/assignments/events", await database_sync_to_async(session_cookie_for)(user))
    assert code == CLOSE_NOT_AUTHENTICATED


@pytest.mark.parametrize("where", ["header", "query"])
async def test_user_api_token_streams(where):
    user = await _user()
    token = await database_sync_to_async(Token.objects.create)(user=user)
    if where == "header":
        communicator = await ws_connect(headers=[(b"authorization", f"Token {token.key}".encode())])
    else:
        communicator = await ws_connect(f"/assignments/events?token={token.key}")
    seqs = await amake_profiles(f"tok-{where}", 1)
    assert [e["seq"] for e in await receive_events(communicator, 1)] == seqs
    await communicator.disconnect()


async def test_agent_token_sees_only_its_own_pools_events():
    own, other = await database_sync_to_async(PoolFactory)(), await database_sync_to_async(PoolFactory)()
    agent = await database_sync_to_async(AgentFactory)(pool=own)
    communicator = await ws_connect(headers=[(b"authorization", f"Bearer agt_{agent.agent_id}".encode())])
    await amake_profiles("elsewhere", 2, pool=other.name)
    mine = await amake_profiles("mine", 1, pool=own.name)
    await amake_profiles("nopool", 1)
    received = await receive_events(communicator, 1)
    assert [e["seq"] for e in received] == mine and received[0]["pool"] == own.name
    assert await nothing_more(communicator)
    await communicator.disconnect()


async def test_agent_asking_for_another_pool_is_closed_with_4403():
    own, other = await database_sync_to_async(PoolFactory)(), await database_sync_to_async(PoolFactory)()
    agent = await database_sync_to_async(AgentFactory)(pool=own)
    code, messages = await _refused(f"/assignments/events?token=agt_{agent.agent_id}&pool={other.name}")
    assert code == CLOSE_FORBIDDEN and messages[0]["error"]["code"] == "forbidden"


async def test_deregistered_agents_token_no_longer_opens_the_stream():
    agent = await database_sync_to_async(AgentFactory)(pool=await database_sync_to_async(PoolFactory)())
    await database_sync_to_async(agent_deregister)(agent_id=agent.agent_id, actor=Actor.for_agent(agent.agent_id))
    code, _ = await _refused(f"/assignments/events?token=agt_{agent.agent_id}")
    assert code == CLOSE_NOT_AUTHENTICATED


@pytest.mark.parametrize("query", ["since=-1", "since=abc", "types=Not%20A%20Type", "pool=" + "x" * 200])
async def test_bad_query_is_closed_with_4400(query):
    user = await _user()
    code, messages = await _refused(f"/assignments/events?{query}", await database_sync_to_async(session_cookie_for)(user))
    assert code == CLOSE_BAD_REQUEST and messages[0]["error"]["code"] == "validation_error"


async def test_browser_page_of_another_site_is_refused_at_the_handshake():
    user = await _user()
    headers = await database_sync_to_async(session_cookie_for)(user) + [(b"origin", b"https://evil.example")]
    communicator = WebsocketCommunicator(application(), "/assignments/events", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    same_site = WebsocketCommunicator(application(), "/assignments/events",
                                      headers=headers[:-1] + [(b"origin", b"http://localhost:8000")])
    connected, _ = await same_site.connect(timeout=5)
    assert connected
    await same_site.disconnect()
