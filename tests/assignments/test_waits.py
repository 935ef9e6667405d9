"""Queued requests (assignments/waits.py): order by the pool's conflict policy, the hand-over on
every way a profile frees up, preemption, wait timeouts, and the lost agent's requests."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.services import (
    agent_deregister,
    agent_drain,
    agent_heartbeat,
    agent_mark_stale,
)
from assignments.analytics import assignment_metrics
from assignments.jobs import assignments_expire_idle, usage_rollup_recent, waits_sweep
from assignments.models import Assignment, Event, Profile, UsageRollup
from assignments.services import assignment_expire, assignment_fail, assignment_release
from assignments.takes import assignment_take
from assignments.waits import queue_position
from config.actors import Actor
from config.errors import Conflict, ValidationFailed
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

S = Assignment.Status
USER = Actor("user", "ops", is_operator=True)


def take(agent_id, profile_id, **kw):
    result = assignment_take(agent_id=agent_id, profile_id=profile_id, actor=as_agent(agent_id), **kw)
    return result.assignments[0]


def fresh(assignment):
    return Assignment.objects.select_related("profile", "pool", "agent").get(pk=assignment.pk)


@pytest.fixture
def scene(db):
    pool = make_pool("waits")
    for name, priority in (("holder", 0), ("w1", 1), ("w2", 5), ("w3", 3)):
        make_agent(pool, name, capacity=3, priority=priority)
    make_profile("p1", pool="waits")
    return pool


def test_a_held_profile_with_wait_seconds_queues_a_pending_request_with_its_position(scene):
    held = take("holder", "p1")
    first = take("w1", "p1", wait_seconds=60)
    second = take("w2", "p1", wait_seconds=60)
    assert (first.status, first.agent.agent_id, first.queue_position) == (S.PENDING, "w1", 1)
    assert first.fencing_token == 0  # none yet: nothing to pass itself off as the holder with
    assert (second.status, second.queue_position) == (S.PENDING, 2)
    assert first.wait_until > timezone.now() + timedelta(seconds=50)
    created = Event.objects.get(type="assignment.created", assignment_id=first.assignment_id)
    assert created.to_status == "pending" and created.data["queued"] is True
    assert created.data["holder_assignment_id"] == str(held.assignment_id)
    # The holder is still the one holder; nobody else is told it holds anything.
    assert Assignment.objects.holding().get(profile__profile_id="p1").pk == held.pk


def test_without_wait_a_held_profile_is_still_refused_at_once(scene):
    take("holder", "p1")
    with pytest.raises(Conflict):
        take("w1", "p1")


def test_fifo_hands_over_in_arrival_order_with_a_new_fencing_token(scene):
    held = take("holder", "p1")
    first = take("w1", "p1", wait_seconds=60)
    second = take("w2", "p1", wait_seconds=60)  # higher priority, but the policy is fifo
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    first, second = fresh(first), fresh(second)
    assert first.status == S.ACTIVE and first.fencing_token == held.fencing_token + 1
    assert second.status == S.PENDING and queue_position(second) == 1
    change = Event.objects.get(type="assignment.status_changed", assignment_id=first.assignment_id)
    assert (change.from_status, change.to_status, change.data["reason"]) == ("pending", "active", "handed_over")
    assert change.data["fencing_token"] == first.fencing_token
    # The release and the hand-over are one batch, in that order.
    released = Event.objects.get(type="assignment.released", assignment_id=held.assignment_id)
    assert released.seq < change.seq
    assignment_release(assignment_id=first.assignment_id, actor=as_agent("w1"))
    assert fresh(second).status == S.ACTIVE


def test_priority_policy_serves_the_highest_priority_first_then_first_come(scene):
    scene.conflict_policy = "priority"
    scene.save(update_fields=["conflict_policy"])
    held = take("holder", "p1")
    low = take("w1", "p1", wait_seconds=60)  # agent priority 1
    high = take("w3", "p1", wait_seconds=60)  # agent priority 3
    same_high_later = take("w2", "p1", wait_seconds=60, priority=3)  # the request's own priority wins
    assert [queue_position(fresh(a)) for a in (high, same_high_later, low)] == [1, 2, 3]
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    assert fresh(high).status == S.ACTIVE
    assignment_release(assignment_id=high.assignment_id, actor=as_agent("w3"))
    assert fresh(same_high_later).status == S.ACTIVE
    assert fresh(low).status == S.PENDING


@pytest.mark.parametrize("how", ["release", "expire", "fail", "force_release_confirmed", "force_release_grace",
                                 "holder_stale_while_releasing", "cancel_waiting_for_agent"])
def test_every_way_a_profile_frees_up_hands_it_over(scene, how):
    held = take("holder", "p1")
    request = take("w1", "p1", wait_seconds=60)
    if how == "release":
        assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    elif how == "expire":
        assignment_expire(assignment_id=held.assignment_id, actor=OPERATOR)
    elif how == "fail":
        assignment_fail(assignment_id=held.assignment_id, actor=as_agent("holder"), error="crashed")
    elif how == "force_release_confirmed":
        assignment_release(assignment_id=held.assignment_id, actor=USER)
        assert fresh(held).status == S.RELEASING and fresh(request).status == S.PENDING
        assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    elif how == "force_release_grace":
        assignment_release(assignment_id=held.assignment_id, actor=USER)
        with override_settings(TETHER_RELEASE_GRACE_SECONDS=1):
            assignments_expire_idle(actor=OPERATOR, now=timezone.now() + timedelta(seconds=5))
    elif how == "holder_stale_while_releasing":
        assignment_release(assignment_id=held.assignment_id, actor=USER)
        agent_mark_stale(agent_id="holder", actor=OPERATOR)
    elif how == "cancel_waiting_for_agent":
        # The holder's agent is lost with no agent free (w1's capacity is used up by its request
        # and others): the session waits for an agent; an operator cancels it.
        Assignment.objects.filter(pk=held.pk).update(status=S.PENDING, agent=None)
        assignment_release(assignment_id=held.assignment_id, actor=USER)
    assert fresh(held).status in Assignment.TERMINAL_STATUSES
    served = fresh(request)
    assert served.status == S.ACTIVE and served.agent.agent_id == "w1"
    assert served.fencing_token > held.fencing_token


def test_preemption_sends_a_lower_priority_holder_to_releasing(scene):
    scene.preemption = True
    scene.save(update_fields=["preemption"])
    held = take("holder", "p1")  # agent priority 0
    take("w1", "p1", wait_seconds=60, priority=0)  # not strictly higher: nothing happens
    assert fresh(held).status == S.ACTIVE
    request = take("w2", "p1", wait_seconds=60)  # agent priority 5
    assert fresh(held).status == S.RELEASING
    change = Event.objects.filter(type="assignment.status_changed", assignment_id=held.assignment_id).last()
    assert change.data["reason"] == "preempted"
    # The holder confirms; the fifo head (w1) is served first, w2 after.
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    assert fresh(request).status == S.PENDING


def test_no_preemption_when_the_pool_has_it_off(scene):
    held = take("holder", "p1")
    take("w2", "p1", wait_seconds=60, priority=900)
    assert fresh(held).status == S.ACTIVE


def test_wait_timeout_expires_the_request_and_the_sweep_is_idempotent(scene):
    take("holder", "p1")
    request = take("w1", "p1", wait_seconds=1)
    later = timezone.now() + timedelta(seconds=2)
    assert waits_sweep(actor=OPERATOR, now=later) == {"expired": 1, "handed_over": 0}
    assert waits_sweep(actor=OPERATOR, now=later) == {"expired": 0, "handed_over": 0}
    expired = fresh(request)
    assert (expired.status, expired.release_reason) == (S.EXPIRED, "expired")
    event = Event.objects.get(type="assignment.expired", assignment_id=request.assignment_id)
    assert event.data["reason"] == "wait timeout"


def test_an_expired_wait_is_never_served(scene):
    held = take("holder", "p1")
    request = take("w1", "p1", wait_seconds=60)
    Assignment.objects.filter(pk=request.pk).update(wait_until=timezone.now() - timedelta(seconds=1))
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    assert fresh(request).status == S.PENDING  # left for the sweep to expire
    assert not Assignment.objects.holding().filter(profile__profile_id="p1").exists()


@pytest.mark.parametrize("lose", ["stale", "drain", "deregister"])
def test_a_lost_agents_queued_requests_are_cancelled_not_moved(scene, lose):
    held = take("holder", "p1")
    request = take("w1", "p1", wait_seconds=60)
    {"stale": agent_mark_stale, "drain": agent_drain, "deregister": agent_deregister}[lose](agent_id="w1", actor=OPERATOR)
    cancelled = fresh(request)
    assert (cancelled.status, cancelled.release_reason, cancelled.agent.agent_id) == (S.RELEASED, "cancelled", "w1")
    assert fresh(held).status == S.ACTIVE
    # Not counted as waiting for an agent either.
    assert not Assignment.objects.waiting().exists()


def test_the_requester_cancels_its_request_by_releasing_it(scene):
    held = take("holder", "p1")
    request = take("w1", "p1", wait_seconds=60)
    assignment_release(assignment_id=request.assignment_id, actor=as_agent("w1"))
    assert (fresh(request).status, fresh(request).release_reason) == (S.RELEASED, "cancelled")
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    assert not Assignment.objects.holding().filter(profile__profile_id="p1").exists()


def test_an_operator_cancels_a_live_agents_request_at_once(scene):
    take("holder", "p1")
    request = take("w1", "p1", wait_seconds=60)
    assignment_release(assignment_id=request.assignment_id, actor=USER)
    assert fresh(request).status == S.RELEASED


def test_queued_requests_count_against_capacity_and_twice_is_refused(scene):
    take("holder", "p1")
    take("w1", "p1", wait_seconds=60)
    with pytest.raises(Conflict) as exc:
        take("w1", "p1", wait_seconds=60)
    assert "queued_assignment_id" in exc.value.details
    with pytest.raises(Conflict):
        take("holder", "p1", wait_seconds=60)  # it holds it already


@pytest.mark.parametrize("bad", [-1, 3601, "10", float("nan"), True, None])
def test_bad_wait_seconds_is_a_validation_error_and_writes_nothing(scene, bad):
    take("holder", "p1")
    before = Event.objects.count()
    with pytest.raises(ValidationFailed):
        take("w1", "p1", wait_seconds=bad)
    assert Event.objects.count() == before


def test_the_heartbeat_tells_the_served_agent_in_assigned(scene):
    held = take("holder", "p1")
    request = take("w1", "p1", wait_seconds=60)
    assert agent_heartbeat(agent_id="w1", actor=as_agent("w1"), reported=[]).assigned == []
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    assert agent_heartbeat(agent_id="w1", actor=as_agent("w1"), reported=[]).assigned == [request.assignment_id]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_many_threads_waiting_for_one_profile_are_served_one_at_a_time_in_order(run_in_threads):
    pool = make_pool("race-waits")
    make_agent(pool, "holder", capacity=2)
    for i in range(8):
        make_agent(pool, f"w{i}", capacity=2)
    make_profile("hot", pool="race-waits")
    held = take("holder", "hot")

    results = run_in_threads(8, lambda i: take(f"w{i}", "hot", wait_seconds=120))
    assert all(isinstance(r, Assignment) and r.status == S.PENDING for r in results), results
    assert sorted(r.queue_position for r in results) == list(range(1, 9))
    order = list(Assignment.objects.queued().order_by("assigned_at", "pk").values_list("agent__agent_id", flat=True))
    # Each release hands the profile to exactly the next one, with growing tokens.
    current, tokens = held, [held.fencing_token]
    for expected in order:
        assignment_release(assignment_id=current.assignment_id, actor=as_agent(current.agent.agent_id))
        current = Assignment.objects.select_related("profile", "pool", "agent").get(
            profile__profile_id="hot", status=S.ACTIVE
        )
        assert current.agent.agent_id == expected
        tokens.append(current.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_releases_and_new_waits_never_make_two_holders(run_in_threads):
    pool = make_pool("race-handover")
    for i in range(12):
        make_agent(pool, f"a{i}", capacity=2)
    for p in range(3):
        make_profile(f"hp{p}", pool="race-handover")
    for p in range(3):
        take(f"a{p}", f"hp{p}")

    def work(i):
        agent = f"a{i}"
        if i < 3:
            held = Assignment.objects.get(agent__agent_id=agent, status=S.ACTIVE)
            return assignment_release(assignment_id=held.assignment_id, actor=as_agent(agent))
        return take(agent, f"hp{i % 3}", wait_seconds=60)

    results = run_in_threads(12, work)
    assert not [r for r in results if isinstance(r, BaseException) and not isinstance(r, Conflict)], results
    waits_sweep(actor=OPERATOR)  # serves what a release that committed first left free
    for p in range(3):
        assert Assignment.objects.holding().filter(profile__profile_id=f"hp{p}").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_queued_while_the_holder_releases_is_never_left_waiting_for_a_free_profile(run_in_threads):
    """Liveness of the hand-over, with no sweep to help: a request queued by a transaction that held
    the profile's lock just before the release took it must be seen by the release (the release asks
    for the queue in a statement that starts after it holds the profile's lock)."""
    pool = make_pool("race-liveness")
    for round_ in range(15):
        profile_id = f"lp{round_}"
        make_profile(profile_id, pool="race-liveness")
        agents = [f"l{round_}-{i}" for i in range(4)]  # fresh agents: no wait-for cycle across rounds
        for agent in agents:
            make_agent(pool, agent, capacity=2)
        held = take(agents[0], profile_id)

        def work(i, held=held, profile_id=profile_id, agents=agents):
            if i == 0:
                return assignment_release(assignment_id=held.assignment_id, actor=as_agent(agents[0]))
            return take(agents[i], profile_id, wait_seconds=60)

        results = run_in_threads(4, work)
        assert not [r for r in results if isinstance(r, BaseException)], results
        holders = Assignment.objects.holding().filter(profile__profile_id=profile_id).count()
        queued = Assignment.objects.queued().filter(profile__profile_id=profile_id).count()
        assert holders == 1, (round_, holders, queued)  # the profile never stays free while 3 want it


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_preempting_request_racing_the_holders_release_never_deadlocks(run_in_threads):
    pool = make_pool("race-preempt", preemption=True)
    make_agent(pool, "low", capacity=2, priority=0)
    for i in range(6):
        make_agent(pool, f"high{i}", capacity=2, priority=10)
    for p in range(6):
        make_profile(f"pp{p}", pool="race-preempt")
    held = [take("low", f"pp{p}") for p in range(2)]

    def work(i):
        if i < 2:
            return assignment_release(assignment_id=held[i].assignment_id, actor=as_agent("low"))
        return take(f"high{i}", f"pp{i % 2}", wait_seconds=60)

    results = run_in_threads(6, work)
    assert not [r for r in results if isinstance(r, BaseException)], results
    for p in range(2):
        assert Assignment.objects.holding().filter(profile__profile_id=f"pp{p}").count() <= 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_release_never_waits_behind_a_request_waiting_for_the_wait_graph_lock():
    """A new wait asks for the wait-graph lock without waiting; finding it held, it lets go of the
    profile's row lock and waits for the graph lock first — so the holder's release (which needs
    that row) goes through meanwhile, and the request then finds the profile free."""
    import threading
    import time

    import psycopg
    from django.db import connection, connections

    from config import locks

    pool = make_pool("graph-busy")
    make_agent(pool, "holder", capacity=2)
    make_agent(pool, "waiter", capacity=2)
    make_profile("gp", pool="graph-busy")
    make_profile("own", pool="graph-busy")
    held = take("holder", "gp")
    take("waiter", "own")  # it holds a profile: its wait could close a cycle, so the graph is locked
    outcome = {}

    def run(name, fn):
        try:
            outcome[name] = fn()
        except BaseException as exc:  # noqa: BLE001 — asserted on below
            outcome[name] = exc
        finally:
            connections.close_all()

    conninfo = connection.get_connection_params()
    for option in ("cursor_factory", "context", "prepare_threshold"):
        conninfo.pop(option, None)
    with psycopg.connect(**conninfo) as other:  # another request, in the middle of its wait
        other.execute("SELECT pg_advisory_xact_lock(%s)", [locks.WAIT_GRAPH])
        waiter = threading.Thread(target=run, args=("take", lambda: take("waiter", "gp", wait_seconds=60)))
        waiter.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the take waits for the graph lock
            other.execute("SELECT pg_stat_clear_snapshot()")  # (read once per transaction otherwise)
            waiting = other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.02)
        assert waiting == 1, ("the take never waited for the wait-graph lock", outcome)
        releaser = threading.Thread(target=run, args=(
            "release", lambda: assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))))
        releaser.start()
        releaser.join(timeout=10)
        released_while_graph_locked = not releaser.is_alive()
        other.rollback()  # the other request ends: the take goes on
    releaser.join(timeout=30)
    waiter.join(timeout=30)
    assert released_while_graph_locked, "the release waited behind the request waiting for the graph lock"
    assert outcome["release"].status == S.RELEASED, outcome
    taken = outcome["take"]
    assert isinstance(taken, Assignment), outcome
    assert (taken.status, taken.fencing_token) == (S.ACTIVE, held.fencing_token + 1)  # free by then: granted
    assert Assignment.objects.holding().get(profile__profile_id="gp").agent.agent_id == "waiter"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_agent_holding_nothing_waits_without_the_wait_graph_lock():
    """No cycle can run through an agent that holds and waits for nothing: its wait neither waits
    for nor takes the graph lock, even while another request holds it."""
    import psycopg
    from django.db import connection

    from config import locks

    pool = make_pool("graph-free")
    for name in ("holder", "idle"):
        make_agent(pool, name, capacity=2)
    make_profile("fp", pool="graph-free")
    take("holder", "fp")
    conninfo = connection.get_connection_params()
    for option in ("cursor_factory", "context", "prepare_threshold"):
        conninfo.pop(option, None)
    with psycopg.connect(**conninfo) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [locks.WAIT_GRAPH])
        connection.cursor().execute("SET lock_timeout = '2s'")  # a wait for the lock fails, not hangs
        try:
            request = take("idle", "fp", wait_seconds=60)
        finally:
            connection.cursor().execute("SET lock_timeout = 0")
        other.rollback()
    assert (request.status, request.queue_position) == (S.PENDING, 1)


def test_a_new_waiting_request_does_not_jump_the_queue_of_a_free_profile(scene):
    scene.profile_cooldown_seconds = 30
    scene.save(update_fields=["profile_cooldown_seconds"])
    held = take("holder", "p1")
    first = take("w1", "p1", wait_seconds=60)
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))
    assert fresh(first).status == S.PENDING  # resting
    Profile.objects.filter(profile_id="p1").update(last_released_at=timezone.now() - timedelta(seconds=31))
    late = take("w2", "p1", wait_seconds=60)  # before the sweep ran: w1 is served first
    assert fresh(first).status == S.ACTIVE
    assert late.status == S.PENDING and late.queue_position == 1


def test_waiting_is_not_holding_in_metrics_and_rollups(scene):
    held = take("holder", "p1")
    served = take("w1", "p1", wait_seconds=60)
    never = take("w2", "p1", wait_seconds=1)
    waits_sweep(actor=OPERATOR, now=timezone.now() + timedelta(seconds=5))  # w2's wait runs out
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("holder"))  # w1 is served
    assert fresh(never).status == S.EXPIRED and fresh(served).status == S.ACTIVE
    now = timezone.now()
    metrics = assignment_metrics(since=now - timedelta(hours=1), until=now + timedelta(seconds=1))
    assert metrics["total_assignments"] == 2  # the holder's and the served request's, not the wait that ran out
    usage_rollup_recent(actor=OPERATOR)
    rows = {(r.scope, r.key): r for r in UsageRollup.objects.all()}
    assert rows[("agent", "w1")].assignments == 1
    assert ("agent", "w2") not in rows or (rows[("agent", "w2")].assignments, rows[("agent", "w2")].busy_seconds,
                                            rows[("agent", "w2")].expirations) == (0, 0, 0)
    assert rows[("profile", "p1")].assignments == 2
