"""A service that waited for a row lock must act on the row as committed, related rows included
(see config/locks.py): under READ COMMITTED a lock query's joins can come back stale."""

import threading

import pytest
from django.db import connections, transaction

from agents.models import Agent
from agents.services import agent_heartbeat
from assignments.models import Assignment, Profile
from assignments.services import assignment_create, assignment_release, assignment_update
from config import errors
from tests.helpers import as_agent, make_agent, make_pool, make_profile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _while_open(change, call, *, hold: float = 0.5) -> tuple[bool, object]:
    """Run `change` in a transaction kept open until `call` — started in another thread once the
    change is made — has returned, or for `hold` seconds: (whether `call` returned while the
    transaction was still open, its outcome — value or exception)."""
    changed, returned = threading.Event(), threading.Event()
    outcome = {}

    def changer():
        try:
            with transaction.atomic():
                change()
                changed.set()
                outcome["overlapped"] = returned.wait(hold)
        finally:
            changed.set()
            connections.close_all()

    def caller():
        changed.wait(10)
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 — the test asserts on it
            outcome["value"] = exc
        finally:
            returned.set()
            connections.close_all()

    threads = [threading.Thread(target=changer), threading.Thread(target=caller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcome["overlapped"], outcome["value"]


def _while_locked(change, call):
    """`call`'s outcome when it starts while `change`'s transaction holds its row locks for a moment
    (so it waits for them)."""
    return _while_open(change, call)[1]


def test_old_holder_acting_while_its_assignment_moves_is_refused_not_crashed():
    pool = make_pool()
    make_agent(pool, "x")
    new_holder = make_agent(pool, "y")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="x", actor=as_agent("x"))

    result = _while_locked(
        lambda: Assignment.objects.filter(pk=held.pk).update(agent=new_holder, fencing_token=2),
        lambda: assignment_update(assignment_id=held.assignment_id, actor=as_agent("x"), metadata={"evil": 1}),
    )

    assert isinstance(result, errors.Forbidden), result
    assert Assignment.objects.get(pk=held.pk).metadata == {}


def test_holder_releasing_while_its_waiting_assignment_is_placed_on_it_succeeds():
    pool = make_pool()
    agent = make_agent(pool, "x")
    make_profile("p1")
    held = assignment_create(profile_id="p1", agent_id="x", actor=as_agent("x"))
    Assignment.objects.filter(pk=held.pk).update(agent=None, status="pending")

    result = _while_locked(
        lambda: Assignment.objects.filter(pk=held.pk).update(agent=agent, status="active"),
        lambda: assignment_release(assignment_id=held.assignment_id, actor=as_agent("x")),
    )

    assert isinstance(result, Assignment), result
    assert Assignment.objects.get(pk=held.pk).status == Assignment.Status.RELEASED


def test_take_while_the_profile_moves_to_another_pool_is_a_pool_mismatch():
    pool, other = make_pool("a"), make_pool("b")
    make_agent(pool, "x")
    make_profile("p1", pool=pool)

    result = _while_locked(
        lambda: Profile.objects.filter(profile_id="p1").update(pool=other),
        lambda: assignment_create(profile_id="p1", agent_id="x", actor=as_agent("x")),
    )

    assert isinstance(result, errors.PoolMismatch), result
    assert not Assignment.objects.exists()


def test_heartbeat_while_the_agent_moves_to_another_pool_is_not_a_false_404():
    pool, other = make_pool("a"), make_pool("b")
    make_agent(pool, "x")

    result = _while_locked(
        lambda: Agent.objects.filter(agent_id="x").update(pool=other),
        lambda: agent_heartbeat(agent_id="x", actor=as_agent("x")),
    )

    assert not isinstance(result, Exception), result
    assert result.agent.pool == other


def test_a_first_registration_racing_another_of_the_same_agent_registers_it_again():
    """Two first registrations of one agent_id (into two pools: each holds its own pool's move lock,
    so nothing else orders them): the second's INSERT waits for the first's transaction, inserts
    nothing, and registers the committed agent again — no IntegrityError, one agent, two events."""
    from agents.services import agent_register
    from assignments.models import Event
    from tests.helpers import OPERATOR

    one, two = make_pool("race-1"), make_pool("race-2")
    result = _while_locked(
        lambda: agent_register(pool=one, agent_id="twin", actor=OPERATOR, capacity=2),
        lambda: agent_register(pool=two, agent_id="twin", actor=OPERATOR, capacity=3),
    )

    assert not isinstance(result, Exception), result
    agent, _token = result
    assert Agent.objects.filter(agent_id="twin").count() == 1
    stored = Agent.objects.get(agent_id="twin")
    assert (stored.pk, stored.pool_id, stored.capacity) == (agent.pk, two.pk, 3)
    events = Event.objects.filter(type="agent.registered", agent_id="twin").order_by("seq")
    assert [(e.pool, e.data["reregistered"]) for e in events] == [("race-1", False), ("race-2", True)]


def test_an_enrollment_racing_another_pool_s_first_registration_of_the_agent_is_refused():
    """The same race, the second by the agent itself with its pool's enrollment token: the agent is
    the other pool's by the time its INSERT finds it, so it is refused (403) and not moved."""
    from agents.services import agent_register

    one, two = make_pool("race-1"), make_pool("race-2")
    result = _while_locked(
        lambda: agent_register(pool=one, agent_id="twin", actor=as_agent("twin")),
        lambda: agent_register(pool=two, agent_id="twin", actor=as_agent("twin")),
    )

    assert isinstance(result, errors.Forbidden), result
    assert Agent.objects.get(agent_id="twin").pool_id == one.pk


def test_new_agents_of_one_pool_register_without_waiting_for_each_other(monkeypatch):
    """A fleet starting: each new agent's registration holds the pool's move lock shared, so one
    still open does not hold up the next (with the lock exclusive they registered one at a time).
    The first is held open where it has inserted its agent and taken the lock, before its event (as
    in production: its own transaction, not one held open around it, which would keep the event
    order lock its event takes)."""
    import agents.services
    from agents.services import agent_register

    pool = make_pool("fleet")
    opened, returned = threading.Event(), threading.Event()
    overlapped = {}
    record = agents.services.event_record

    def event_record(*args, **kwargs):
        if threading.current_thread().name == "first":
            opened.set()
            overlapped["first"] = returned.wait(5)
        return record(*args, **kwargs)

    monkeypatch.setattr(agents.services, "event_record", event_record)
    outcome = {}

    def register(agent_id):
        try:
            if agent_id == "second":
                opened.wait(10)
            outcome[agent_id] = agent_register(pool=pool, agent_id=agent_id, actor=as_agent(agent_id))
        except Exception as exc:  # noqa: BLE001 — the test asserts on it
            outcome[agent_id] = exc
        finally:
            if agent_id == "second":
                returned.set()
            connections.close_all()

    threads = [threading.Thread(target=register, args=(a,), name=a) for a in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(isinstance(r, Exception) for r in outcome.values()), outcome
    assert overlapped["first"], "the second registration waited for the first's transaction"
    assert set(Agent.objects.filter(pool=pool).values_list("agent_id", flat=True)) == {"first", "second"}


def test_a_new_agent_joining_waits_for_the_pool_s_moves_in_progress():
    """A failover or rebalance holds the move lock exclusive while it chooses among the pool's
    agents: a new agent's registration waits for it to commit (then its after-commit rebalance sees
    what the move left waiting), and a re-registration, which may fail over itself, waits too."""
    from agents.services import agent_register
    from config.locks import pool_lock_moves

    pool = make_pool("moving")
    make_agent(pool, "known")
    for agent_id in ("newcomer", "known"):
        overlapped, result = _while_open(
            lambda: pool_lock_moves(pool.pk),
            lambda agent_id=agent_id: agent_register(pool=pool, agent_id=agent_id, actor=as_agent(agent_id)),
            hold=5,
        )
        assert not isinstance(result, Exception), result
        assert not overlapped, f"{agent_id}'s registration did not wait for the pool's move in progress"
