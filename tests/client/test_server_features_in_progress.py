"""The SDK's surface for the server features built after the core — waiting takes (`wait_seconds`),
selection by `profile_requirements`, profile outcome reports, and tasks — written to DESIGN.md.

Each test first asks the server's OpenAPI schema whether it has the feature, and is skipped (saying
which) until it does; then it runs against the real server like the rest of this folder. So these
tests switch themselves on as those endpoints land, and fail if the SDK and the server disagree.
"""

import threading
import time

import httpx
import pytest

from tether_client import Conflict, NoProfileAvailable, StaleFencingToken, WaitExpired

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def schema(tether_server):
    return httpx.get(f"{tether_server.url}/api/schema/?format=json", timeout=60).json()


def _request_fields(schema, path, method="post"):
    operation = schema["paths"].get(path, {}).get(method)
    if operation is None:
        return set()
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = content.get("schema", {}).get("$ref", "")
    component = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
    return set(component.get("properties", {}))


def _need(condition, feature):
    if not condition:
        pytest.skip(f"the server has no {feature} yet (DESIGN.md); the SDK's side is in place")


@pytest.fixture
def waits(schema):
    _need("wait_seconds" in _request_fields(schema, "/api/assignments"), "waiting takes (wait_seconds)")


@pytest.fixture
def selection(schema):
    _need("profile_requirements" in _request_fields(schema, "/api/assignments"), "selection by profile_requirements")


@pytest.fixture
def reports(schema):
    _need("/api/profiles/{profile_id}/report" in schema["paths"], "profile outcome reports")


@pytest.fixture
def tasks(schema):
    _need("/api/tasks" in schema["paths"] and "/api/agents/{agent_id}/tasks/claim" in schema["paths"], "tasks")


def test_a_waiting_take_gets_the_profile_when_its_holder_releases(world, waits):
    holder, waiter = world.agent("w1"), world.agent("w2")
    first = holder.profile(world.profiles[0])
    threading.Timer(1.0, first.release).start()

    with waiter.profile(world.profiles[0], wait=20) as lease:
        assert lease.assignment.status == "active" and lease.fencing_token > first.fencing_token
        assert world.ops().holder(world.profiles[0])["assignment"]["agent_id"] == waiter.agent_id


class _CountingTransport(httpx.BaseTransport):
    """Counts the reads of one path prefix an agent makes (its Http's transport)."""

    def __init__(self, prefix):
        self.inner, self.prefix, self.reads = httpx.HTTPTransport(), prefix, 0

    def handle_request(self, request):
        if request.method == "GET" and request.url.path.startswith(self.prefix):
            self.reads += 1
        return self.inner.handle_request(request)


def test_a_waiting_take_hears_the_hand_over_on_the_event_stream_instead_of_polling(world, waits):
    from tether_client._http import Http

    holder, waiter = world.agent("w1"), world.agent("w2")
    counting = _CountingTransport("/api/assignments/")
    waiter.http = Http(world.url, token=waiter.token, transport=counting)
    first = holder.profile(world.profiles[0])
    threading.Timer(3.0, first.release).start()

    started = time.monotonic()
    with waiter.profile(world.profiles[0], wait=20) as lease:
        waited = time.monotonic() - started
        assert lease.assignment.status == "active" and lease.fencing_token > first.fencing_token
    # 3 s of waiting: polling every 0.5 s would read it ~6 times; the stream needs one read after
    # subscribing and one when the hand-over event names the request.
    assert waited >= 2.5
    assert counting.reads <= 2, counting.reads


def test_a_waiting_take_polls_where_the_event_stream_cannot_be_opened(world, waits, monkeypatch):
    from tether_client import ConnectionFailed
    from tether_client.events import EventStream

    def refused(self):
        raise ConnectionFailed("no WebSocket through this proxy")

    monkeypatch.setattr(EventStream, "open", refused)
    holder, waiter = world.agent("w1"), world.agent("w2")
    first = holder.profile(world.profiles[0])
    threading.Timer(1.0, first.release).start()
    with waiter.profile(world.profiles[0], wait=20) as lease:
        assert lease.assignment.status == "active" and lease.fencing_token > first.fencing_token


def test_a_wait_that_runs_out_raises_wait_expired(world, waits):
    holder, waiter = world.agent("w1"), world.agent("w2")
    with holder.profile(world.profiles[0]):
        started = time.monotonic()
        with pytest.raises(WaitExpired):
            waiter.profile(world.profiles[0], wait=1)
        assert time.monotonic() - started < 30
    assert waiter.held == []


def test_without_wait_a_held_profile_is_still_a_conflict(world, waits):
    holder, other = world.agent("w1"), world.agent("w2")
    with holder.profile(world.profiles[0]):
        with pytest.raises(Conflict):
            other.profile(world.profiles[0])


def test_selection_by_requirements_takes_a_matching_free_profile(world, selection):
    agent = world.agent()
    eu = [p for i, p in enumerate(world.profiles) if i % 2 == 0]  # conftest tags even profiles "eu"
    with agent.profile(requirements={"tags": ["eu"], "pool": world.pool}) as a, \
            agent.profile(requirements={"tags": ["eu"], "pool": world.pool}) as b:
        assert {a.profile_id, b.profile_id} == set(eu)
        with pytest.raises(NoProfileAvailable):
            agent.profile(requirements={"tags": ["eu"], "pool": world.pool})


def test_a_holder_reports_how_the_profile_fared(world, reports):
    agent = world.agent()
    with agent.profile(world.profiles[0]) as lease:
        lease.report("success", detail="checkout done")
    profile = world.ops().profile(world.profiles[0])
    assert "health_score" in profile


def test_a_submitted_task_is_claimed_started_and_completed(world, tasks):
    ops = world.ops()
    agent = world.agent()
    submitted = ops.submit(pool=world.pool, payload={"url": "https://example.com"}, priority="high")

    claimed = agent.claim(max=5, wait=5)
    assert [t.task_id for t in claimed] == [submitted["task_id"]]
    task = claimed[0]
    assert task.payload == {"url": "https://example.com"} and task.attempt >= 1
    task.start()
    task.complete({"ok": True})
    done = ops.task(task.task_id)
    assert done["status"] == "completed" and done["result"] == {"ok": True}


def test_a_failed_task_with_retry_goes_back_and_its_old_attempt_is_stale(world, tasks):
    ops = world.ops()
    agent = world.agent()
    ops.submit(pool=world.pool, payload={"n": 1})
    [task] = agent.claim(max=1, wait=5)
    task.fail("the site was down", retry=True)

    [again] = agent.claim(max=1, wait=10)
    assert again.task_id == task.task_id and again.attempt == task.attempt + 1
    with pytest.raises(StaleFencingToken):
        task.complete({"late": True})  # the previous attempt's token
    again.complete({"ok": True})


def test_submit_with_the_same_idempotency_key_queues_one_task(world, tasks):
    ops = world.ops()
    first = ops.submit(pool=world.pool, payload={"n": 1}, idempotency_key="submit-once-1")
    second = ops.submit(pool=world.pool, payload={"n": 1}, idempotency_key="submit-once-1")
    assert first["task_id"] == second["task_id"]
    assert len(ops.tasks(pool=world.pool)) == 1


def test_the_schema_probe_sees_what_the_server_has(schema):
    """Without this the probes above could skip forever: they must see what exists today."""
    assert {"profile_id", "agent_id", "workflow_id"} <= _request_fields(schema, "/api/assignments")
    assert "/api/profiles/{profile_id}/assignment" in schema["paths"]
