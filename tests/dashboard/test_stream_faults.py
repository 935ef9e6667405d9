"""Every failure of the event stream closes the socket with a code the server library really sends,
so that the client reconnects — under both servers the README names: uvicorn (`make serve`, the
production recipe) and daphne (`make run`). Real servers as subprocesses, real WebSockets.

Before: a failed stream closed with 1011, which daphne's WebSocket library refuses to send; the error
was swallowed and the client kept an open, silent socket (7,300 events missed in one run). A NUL in
`?token=` or a filter, and a WebSocket to an unknown path, answered the handshake with a 500.
"""

import asyncio
import json
import threading

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, connections

from config.actors import Actor
from tests.dashboard.events_support import amake_profiles, last_seq
from tests.factories import AgentFactory, PoolFactory
from tests.serving import APPLICATION_NAME, daphne, make_serve, server_env, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]

OPERATOR = Actor.system("test-stream-faults")
REPLAY_PAGE = 5


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(request, django_db_setup):
    env = server_env(settings, TETHER_EVENTS_REPLAY_PAGE=REPLAY_PAGE, TETHER_EVENTS_POLL_SECONDS=30)
    started = make_serve(env) if request.param == "uvicorn" else daphne(env)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def agent_token(transactional_db):
    agent = AgentFactory(pool=PoolFactory())
    return f"agt_{agent.agent_id}", agent


async def _until_closed(ws, timeout=10.0) -> tuple[int, list[dict]]:
    """Read until the server closes: (close code, messages before it). Times out rather than wait on
    a silent socket forever — the very defect under test."""
    messages = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return closed.value.rcvd.code, messages


@pytest.mark.parametrize("path", ["/nope", "/assignments/events/extra", "/"])
async def test_unknown_path_is_closed_4404_not_answered_500(server, path):
    async with websockets.connect(server.ws + path) as ws:
        code, messages = await _until_closed(ws)
    assert code == 4404
    assert messages[-1]["error"]["code"] == "not_found"


@pytest.mark.parametrize("token", ["%00", "abc%00def", "agt_%00x"])
async def test_nul_in_token_is_4401_not_500(server, token):
    async with websockets.connect(f"{server.ws}/assignments/events?token={token}&since=0") as ws:
        code, messages = await _until_closed(ws)
    assert code == 4401
    assert messages == [{"type": "error", "error": {"code": "not_authenticated", "message": "the API token is not valid"}}]


@pytest.mark.parametrize("query", ["pool=a%00b", "agent_id=%00", "profile_id=x%00", "types=agent.%00"])
async def test_nul_in_a_filter_is_4400_not_500(server, agent_token, query):
    token, _ = agent_token
    async with websockets.connect(f"{server.ws}/assignments/events?since=0&{query}",
                                  additional_headers={"Authorization": f"Token {token}"}) as ws:
        code, messages = await _until_closed(ws)
    assert code == 4400
    assert messages[-1]["error"]["code"] == "validation_error"


def _kill_backends_waiting_on_a_lock() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'", [APPLICATION_NAME])
        return [pid for _, pid in cursor.fetchall()]


class TableLock:
    """Holds ACCESS EXCLUSIVE on the event table in a thread of its own, so that the server's next
    read of the log blocks (deterministically in flight) until the lock or its backend goes."""

    def __init__(self):
        self.taken, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self):
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("LOCK TABLE assignments_event IN ACCESS EXCLUSIVE MODE")
                self.taken.set()
                self.release.wait(30)
                cursor.execute("ROLLBACK")
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        assert self.taken.wait(10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(10)


async def test_database_connection_killed_mid_replay_closes_4500_and_a_reconnect_resumes(server, agent_token):
    token, agent = agent_token
    auth = {"Authorization": f"Token {token}"}
    seqs = await amake_profiles("replay-kill", 4 * REPLAY_PAGE, pool=agent.pool.name)
    stream = f"{server.ws}/assignments/events?since=0&pool={agent.pool.name}"
    # A first subscriber starts the server's hub while the log is readable.
    async with websockets.connect(f"{server.ws}/assignments/events", additional_headers=auth):
        await asyncio.sleep(0.3)
        with TableLock():
            async with websockets.connect(stream, additional_headers=auth) as ws:
                killed = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: wait_until(lambda: _in_executor(_kill_backends_waiting_on_a_lock), timeout=10))
                assert killed, "the replay never read the log"
                code, messages = await _until_closed(ws)
        assert code == 4500
        error = messages[-1]
        assert error["type"] == "error" and error["error"]["code"] == "server_error"
        got = [m["seq"] for m in messages[:-1]]
        assert error["since"] == (got[-1] if got else 0)

        # The client does what a 4500 asks: reconnect from where the stream stopped. Nothing is
        # lost, nothing comes twice.
        async with websockets.connect(f"{server.ws}/assignments/events?since={error['since']}&pool={agent.pool.name}",
                                      additional_headers=auth) as again:
            while len(got) < len(seqs):
                got.append(json.loads(await asyncio.wait_for(again.recv(), 10))["seq"])
        assert got == seqs


def _in_executor(fn):
    try:
        return fn()
    finally:
        connections.close_all()


async def test_server_still_streams_after_the_faults(server, agent_token):
    """The faults above left nothing broken behind: a new subscriber gets a new change live."""
    token, agent = agent_token
    async with websockets.connect(f"{server.ws}/assignments/events?pool={agent.pool.name}",
                                  additional_headers={"Authorization": f"Token {token}"}) as ws:
        await asyncio.sleep(0.3)
        (seq,) = await amake_profiles("after-faults", 1, pool=agent.pool.name)
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] == seq
    assert await database_sync_to_async(last_seq)() == seq

