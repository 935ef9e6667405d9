"""The agent SDK against a real server: registration, takes and releases, conflicts, fencing,
revocation seen by the heartbeat, and retries that are safe."""

import threading
import time

import httpx
import pytest

from tether_client import Agent, Client, Conflict, NotAuthenticated, StaleFencingToken
from tether_client._http import Http

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_register_returns_an_agent_with_its_own_token_that_the_server_knows(world):
    agent = world.agent("w1", capabilities=["chrome"], capacity=3)

    assert agent.token.startswith("agt_")
    info = agent.info()
    assert (info["agent_id"], info["pool"], info["capabilities"], info["capacity"]) == (
        agent.agent_id, world.pool, ["chrome"], 3)


def test_a_wrong_enrollment_token_is_refused_with_a_typed_error(world):
    from tether_client import Forbidden

    with pytest.raises(Forbidden) as refused:
        Agent.register(world.url, enrollment_token="not-the-token", agent_id=f"{world.prefix}-x", pool=world.pool)
    assert refused.value.code == "forbidden" and refused.value.status == 403


def test_profile_context_manager_takes_and_releases(world):
    agent = world.agent()
    ops = world.ops()

    with agent.profile(world.profiles[0], workflow_id="wf-1") as lease:
        assert lease.profile_id == world.profiles[0]
        assert lease.fencing_token >= 1 and lease.assignment_id
        holder = ops.holder(world.profiles[0])
        assert holder["available"] is False and holder["assignment"]["agent_id"] == agent.agent_id
        assert holder["assignment"]["workflow_id"] == "wf-1"
        assert agent.held == [lease]

    assert ops.holder(world.profiles[0])["available"] is True
    assert ops.assignment(lease.assignment_id).status == "released"
    assert agent.held == []


def test_the_profile_is_released_even_when_the_block_raises(world):
    agent = world.agent()

    with pytest.raises(RuntimeError, match="the workflow broke"):
        with agent.profile(world.profiles[0]) as lease:
            raise RuntimeError("the workflow broke")

    assert world.ops().assignment(lease.assignment_id).status == "released"
    assert agent.held == []


def test_a_held_profile_raises_conflict_naming_the_holder(world):
    first, second = world.agent("w1"), world.agent("w2")

    with first.profile(world.profiles[0]) as lease:
        with pytest.raises(Conflict) as conflict:
            second.profile(world.profiles[0])

    assert conflict.value.holder_agent_id == first.agent_id
    assert conflict.value.holder_assignment_id == lease.assignment_id
    assert conflict.value.status == 409 and conflict.value.code == "conflict"
    assert second.held == []


def test_a_stale_fencing_token_is_refused(world):
    agent = world.agent()
    with agent.profile(world.profiles[0]) as lease:
        current = lease.fencing_token
        lease.assignment.fencing_token = current - 1 if current > 1 else current + 1  # as a paused agent's
        with pytest.raises(StaleFencingToken) as stale:
            lease.idle()
        assert stale.value.current_fencing_token == current
        lease.assignment.fencing_token = current
        assert lease.idle().status == "idle"
        assert lease.active().status == "active"


def test_after_failover_the_old_holder_cannot_release_the_new_holders_assignment(world):
    """Register the same agent id again (a restart): what the old incarnation held fails over with a
    new fencing token; the old lease's release is fenced and touches nothing."""
    old = world.agent("w1")
    lease = old.profile(world.profiles[0])
    world.agent("w2")  # somewhere for it to go
    restarted = Agent.register(world.url, enrollment_token=world.enrollment_token, agent_id=old.agent_id,
                               pool=world.pool, capacity=5)
    world.agents.append(restarted)

    now = world.ops().assignment(lease.assignment_id)
    assert now.status in ("active", "idle", "pending") and now.fencing_token > lease.fencing_token
    with pytest.raises(NotAuthenticated):  # the old incarnation's token stopped working
        old.heartbeat()
    lease.agent = restarted  # even with a valid credential, the old fencing token is refused
    lease.release()
    assert lease.revoked
    assert world.ops().assignment(lease.assignment_id).status == now.status


def test_operator_force_release_is_seen_by_the_heartbeat_and_confirmed(world):
    revoked = []
    agent = world.agent()
    agent.on_revoked = revoked.append
    lease = agent.profile(world.profiles[0])

    assert world.ops().release(lease.assignment_id).status == "releasing"  # its agent is alive: it must confirm
    reply = agent.heartbeat()

    assert reply["revoked"] == [lease.assignment_id]
    assert lease.revoked and revoked == [lease] and agent.held == []
    assert world.ops().assignment(lease.assignment_id).status == "released"
    lease.release()  # leaving the block afterwards is harmless
    assert world.ops().assignment(lease.assignment_id).release_reason == "force_released"


def test_the_background_heartbeat_applies_a_drain(world):
    agent = world.agent("w1", capacity=2)
    world.agent("w2")  # the drained agent's work moves here
    agent.heartbeat_interval = 0.3
    lease = agent.profile(world.profiles[0])
    agent.start()
    try:
        world.ops().drain(agent.agent_id)
        assert lease.wait_revoked(timeout=15), agent.last_heartbeat_error
    finally:
        agent.stop()
    assert agent.held == [] and agent.status == "inactive"
    moved = world.ops().assignment(lease.assignment_id)
    assert moved.agent_id == f"{world.prefix}-w2" and moved.fencing_token > lease.fencing_token


def test_heartbeat_picks_up_what_failover_assigned_to_it(world):
    first = world.agent("w1")
    second = world.agent("w2")
    picked = []
    second.on_assigned = picked.append
    lease = first.profile(world.profiles[1])

    world.ops().deregister(first.agent_id)  # its assignment fails over to w2
    second.heartbeat()

    assert [p.assignment_id for p in picked] == [lease.assignment_id]
    assert second.held[0].fencing_token > lease.fencing_token
    second.release_all()
    assert world.ops().assignment(lease.assignment_id).status == "released"


def test_start_picks_the_heartbeat_interval_from_the_pool(world):
    agent = world.agent()
    agent.start()
    try:
        assert agent.heartbeat_interval == 10.0  # the pool's 30 s heartbeat timeout, over three
    finally:
        agent.stop()


class DropFirstResponse(httpx.BaseTransport):
    """Forwards requests to the server, but loses the first answer to a matching request after the
    server handled it — a connection cut after the commit, the case Idempotency-Key exists for."""

    def __init__(self, match):
        self.inner = httpx.HTTPTransport()
        self.match = match
        self.dropped = 0
        self.keys = []

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if self.match(request):
            self.keys.append(request.headers.get("Idempotency-Key"))
            if not self.dropped:
                response.read()
                response.close()
                self.dropped += 1
                raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


def test_a_take_whose_answer_was_lost_is_retried_with_the_same_idempotency_key(world):
    registered = world.agent()
    transport = DropFirstResponse(lambda r: r.method == "POST" and r.url.path == "/api/assignments")
    agent = Agent(world.url, agent_id=registered.agent_id, token=registered.token,
                  http=Http(world.url, token=registered.token, transport=transport, backoff=0.01))

    lease = agent.profile(world.profiles[0])

    assert transport.dropped == 1 and len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    every = world.ops().assignments(profile_id=world.profiles[0])  # whatever their status
    assert [a["assignment_id"] for a in every] == [lease.assignment_id]  # taken once, not twice
    lease.release()


def test_a_non_idempotent_post_is_not_retried_after_its_answer_was_lost(world):
    from tether_client import ConnectionFailed

    registered = world.agent()
    transport = DropFirstResponse(lambda r: r.url.path.endswith("/drain"))
    ops = Client(world.url, http=Http(world.url, token=world.operator_token, transport=transport, backoff=0.01))
    http = ops.http
    with pytest.raises(ConnectionFailed):
        http.post(f"/api/agents/{registered.agent_id}/drain")  # a plain POST: may have run, so not resent
    assert transport.keys == [None]


@pytest.fixture(scope="module")
def throttled_server(django_db_setup, django_db_blocker):
    from tests.client.conftest import TetherServer

    server = TetherServer(TETHER_API_THROTTLE_RATE="3/s", TETHER_DB_POOL_MAX_SIZE="2")
    yield server
    server.stop()


class Recording(httpx.BaseTransport):
    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.log = []

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        self.log.append((time.monotonic(), response.status_code, response.headers.get("Retry-After")))
        return response


def test_429_is_retried_after_retry_after(transactional_db, throttled_server):
    from tests.client.conftest import make_world

    w = make_world(throttled_server.url)
    agent = Agent.register(w.url, enrollment_token=w.enrollment_token, agent_id=f"{w.prefix}-w1", pool=w.pool)
    recording = Recording()
    agent.http = Http(w.url, token=agent.token, transport=recording)

    for _ in range(8):
        agent.info()

    statuses = [status for _, status, _ in recording.log]
    assert statuses.count(200) == 8 and 429 in statuses, statuses
    for i, (at, status, retry_after) in enumerate(recording.log[:-1]):
        if status == 429:
            assert retry_after is not None
            assert recording.log[i + 1][0] - at >= float(retry_after) - 0.05  # waited as told


def test_heartbeats_and_takes_from_threads_share_one_agent(world):
    """Takes and releases from worker threads while the heartbeat thread runs: every lease ends
    released and none is picked up twice."""
    agent = world.agent(capacity=4)
    agent.heartbeat_interval = 0.05
    agent.start()
    errors = []

    def work(profile_id):
        try:
            for _ in range(5):
                with agent.profile(profile_id):
                    time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 — handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in world.profiles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    agent.stop()
    assert not errors, errors
    assert agent.held == []
    assert world.ops().assignments(agent_id=agent.agent_id, status="pending,active,idle,releasing") == []
    assert len(world.ops().assignments(agent_id=agent.agent_id, status="released")) == 5 * len(world.profiles)
