"""Two web instances (two real `make serve` processes) sharing Redis and PostgreSQL: a change committed by
one process reaches subscribers connected to either instance, over real WebSockets."""

import asyncio
import json
import secrets

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from config.actors import Actor
from pools.services import pool_create
from tests.dashboard.events_support import amake_profiles, last_seq
from tests.factories import AgentFactory, PoolFactory
from tests.serving import make_serve, server_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def two_instances(django_db_setup):
    """Two production servers, each started as the README says (`make serve`, one worker each), once
    for this module (they take seconds to start on a busy machine); they use the test database,
    which each transactional test empties after itself. The suite's settings module, so that the
    admin login below can check the suite's (fast) password hashes."""
    env = server_env(settings, DJANGO_SETTINGS_MODULE="tests.settings",
                     TETHER_EVENTS_POLL_SECONDS="30")  # so that only live messages explain a quick delivery
    servers = []
    try:
        for _ in range(2):
            servers.append(make_serve(env, workers=1, db_connections=4))
        yield tuple(server.port for server in servers)
    finally:
        for server in servers:
            server.stop()


async def _receive(ws, n, timeout=5.0):
    return [json.loads(await asyncio.wait_for(ws.recv(), timeout)) for _ in range(n)]


async def test_a_change_reaches_subscribers_on_both_instances(two_instances):
    pool = await database_sync_to_async(PoolFactory)()
    agent = await database_sync_to_async(AgentFactory)(pool=pool)
    auth = {"Authorization": f"Token agt_{agent.agent_id}"}
    port_a, port_b = two_instances
    async with websockets.connect(f"ws://127.0.0.1:{port_a}/assignments/events", additional_headers=auth) as on_a, \
            websockets.connect(f"ws://127.0.0.1:{port_b}/assignments/events", additional_headers=auth) as on_b:
        await asyncio.sleep(0.3)  # both handshakes done and subscribed (the accept follows the group join)
        seqs = await amake_profiles("two-instances", 3, pool=pool.name)
        got_a, got_b = await _receive(on_a, 3, 2.0), await _receive(on_b, 3, 2.0)
        assert [e["seq"] for e in got_a] == seqs == [e["seq"] for e in got_b]
        assert got_a == got_b

    # A reconnect to the other instance resumes with nothing lost.
    async with websockets.connect(
        f"ws://127.0.0.1:{port_b}/assignments/events?since={seqs[0]}", additional_headers=auth
    ) as again:
        assert [e["seq"] for e in await _receive(again, 2)] == seqs[1:]


def _operator_marks_stale_through_the_admin(base: str, username: str, password: str, agent_pk: int) -> None:
    """An operator's change made over HTTP on one instance: log in to the admin, run its action."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def post(path, fields):
        page = opener.open(base + path, timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}, doseq=True).encode()
        return opener.open(urllib.request.Request(base + path, data=body), timeout=10).read().decode()

    post("/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"})
    post("/admin/agents/agent/", {"action": "mark_stale", "_selected_action": [agent_pk], "index": 0})


async def test_an_operators_change_through_one_instance_reaches_a_subscriber_on_the_other(two_instances):
    import secrets

    from django.contrib.auth import get_user_model

    password = secrets.token_urlsafe(16)
    await database_sync_to_async(get_user_model().objects.create_superuser)("op", "op@example.test", password)
    pool = await database_sync_to_async(PoolFactory)()
    agent = await database_sync_to_async(AgentFactory)(pool=pool)
    port_a, port_b = two_instances
    async with websockets.connect(
        f"ws://127.0.0.1:{port_b}/assignments/events?types=agent.stale",
        additional_headers={"Authorization": f"Token agt_{agent.agent_id}"},
    ) as on_b:
        await asyncio.get_running_loop().run_in_executor(
            None, _operator_marks_stale_through_the_admin, f"http://127.0.0.1:{port_a}", "op", password, agent.pk
        )
        (event,) = await _receive(on_b, 1, 3.0)
    assert (event["type"], event["agent_id"], event["actor"]) == ("agent.stale", agent.agent_id, "user:op")


async def test_real_server_refuses_a_bad_token_with_4401(two_instances):
    """Refused before anything is sent: not one event reaches a bad token, and the refusal itself
    changes nothing (no event is written for it)."""
    await database_sync_to_async(_one_event)()  # something in the log that a leaky replay would send
    before = await database_sync_to_async(last_seq)()
    assert before > 0
    received = []
    async with websockets.connect(f"ws://127.0.0.1:{two_instances[0]}/assignments/events?token=agt_bad&since=0") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                received.append(await asyncio.wait_for(ws.recv(), 5))
    assert closed.value.rcvd.code == 4401
    # One message, the refusal itself (then the close): no event.
    assert [json.loads(m) for m in received] == [
        {"type": "error", "error": {"code": "not_authenticated", "message": "the API token is not valid"}}
    ]
    assert await database_sync_to_async(last_seq)() == before


def _one_event():
    pool_create(name=f"refusal-{secrets.token_hex(3)}", actor=Actor.system("test"))
