"""The transition tables are the only gates: every status change that any write path records passes
through its machine's `check` first (config/transitions.py) — assignment moves by failover and
rebalancing, registration, sweeps and alerts included.

The scene below walks every service that changes a status. Each recorded status change (an event
with `from_status` → `to_status`; invariant 3 says every change has one) must have been asked of
the table of its machine, with the same pair, before it was made.
"""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.jobs import agents_mark_overdue_stale
from agents.models import Agent
from agents.services import (
    agent_deregister,
    agent_drain,
    agent_heartbeat,
    agent_mark_stale,
    agent_register,
    agent_set_status,
)
from assignments.alerts import alert_acknowledge, alert_raise, alert_resolve
from assignments.jobs import assignments_expire_idle, waits_sweep
from assignments.models import Alert, Assignment, Event
from assignments.services import (
    assignment_create,
    assignment_expire,
    assignment_fail,
    assignment_release,
    assignment_update,
)
from assignments.takes import assignment_take
from config.actors import Actor
from config.errors import InvalidTransition
from config.transitions import StateMachine
from pools.jobs import pools_rebalance_all
from tests.helpers import OPERATOR, as_agent, make_pool, make_profile

USER = Actor("user", "ops", is_operator=True)
MACHINE_OF_EVENT = {"assignment": "assignment", "agent": "agent", "alert": "alert"}


@pytest.fixture
def gate_calls(monkeypatch):
    calls = []
    original = StateMachine.check

    def spy(self, from_status, to_status, **kwargs):
        calls.append((self.name, str(from_status), str(to_status)))
        return original(self, from_status, to_status, **kwargs)

    monkeypatch.setattr(StateMachine, "check", spy)
    return calls


def _recorded_changes(since: int) -> list[tuple[str, str, str]]:
    changes = []
    for type_, from_status, to_status in Event.objects.filter(seq__gt=since).order_by("seq").values_list(
        "type", "from_status", "to_status"
    ):
        machine = MACHINE_OF_EVENT.get(type_.split(".")[0])
        if machine is None or not from_status or not to_status:
            continue  # a creation (nothing to move from), or a pool or profile event
        if from_status == to_status and type_ != Event.Type.ASSIGNMENT_REASSIGNED:
            continue  # a re-registration of an active agent: no status change
        changes.append((machine, from_status, to_status))
    return changes


def _assert_all_gated(calls, since):
    changes = _recorded_changes(since)
    assert changes, "the scene recorded no status change"
    missing = [change for change in changes if change not in calls]
    assert missing == [], f"status changes recorded without asking their table: {missing}"
    return changes


@pytest.mark.django_db(transaction=True)
def test_every_write_path_asks_its_table(gate_calls):
    pool = make_pool("gates", heartbeat_timeout_seconds=30, assignment_idle_timeout_seconds=60)
    for i in range(6):
        make_profile(f"g{i}", pool="gates")
    since = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    a1, _ = agent_register(pool=pool, agent_id="a1", actor=OPERATOR, capacity=3)
    agent_register(pool=pool, agent_id="a2", actor=OPERATOR, capacity=1)
    # Takes, updates, a release by the holder, a failure, an expiry.
    x = assignment_create(profile_id="g0", agent_id="a1", actor=as_agent("a1"))
    assignment_update(assignment_id=x.assignment_id, actor=as_agent("a1"), status="idle")
    assignment_update(assignment_id=x.assignment_id, actor=as_agent("a1"), status="active")
    assignment_release(assignment_id=x.assignment_id, actor=as_agent("a1"))
    y = assignment_create(profile_id="g1", agent_id="a1", actor=as_agent("a1"))
    assignment_fail(assignment_id=y.assignment_id, actor=as_agent("a1"), error="crashed")
    z = assignment_create(profile_id="g2", agent_id="a1", actor=as_agent("a1"))
    assignment_expire(assignment_id=z.assignment_id, actor=OPERATOR)
    # An operator's release of a live agent's assignment (→ releasing), confirmed by a heartbeat.
    r = assignment_create(profile_id="g3", agent_id="a1", actor=as_agent("a1"))
    assignment_release(assignment_id=r.assignment_id, actor=USER)
    agent_heartbeat(agent_id="a1", actor=as_agent("a1"), reported=[])
    # Agent statuses set by the agent itself.
    agent_set_status(agent_id="a1", status="busy", actor=as_agent("a1"))
    agent_set_status(agent_id="a1", status="active", actor=as_agent("a1"))
    # Failover: a1 goes stale holding three; a2 (room for one) gets one, two wait (alert raised).
    for pid in ("g0", "g1", "g2"):
        assignment_create(profile_id=pid, agent_id="a1", actor=as_agent("a1"))
    agent_mark_stale(agent_id="a1", actor=OPERATOR)
    assert Assignment.objects.waiting().filter(pool=pool).count() == 2
    # Revived by its heartbeat: the waiting work is rebalanced onto it, the stale alert resolves.
    agent_heartbeat(agent_id="a1", actor=as_agent("a1"))
    assert Assignment.objects.waiting().filter(pool=pool).count() == 0
    # The sweeps: stale by missed heartbeats, then rebalance and expiry.
    agent_register(pool=pool, agent_id="a3", actor=OPERATOR, capacity=4)
    Agent.objects.filter(agent_id="a3").update(last_heartbeat=timezone.now() - timedelta(seconds=60))
    assert agents_mark_overdue_stale(actor=OPERATOR) == {"marked_stale": 1}
    pools_rebalance_all(actor=OPERATOR)
    with override_settings(TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS=1):
        assignments_expire_idle(actor=OPERATOR, now=timezone.now() + timedelta(seconds=5))
        assignments_expire_idle(actor=OPERATOR, now=timezone.now() + timedelta(seconds=200))
    # Registration again of stale, draining and inactive agents; drain; deregister.
    agent_register(pool=pool, agent_id="a1", actor=OPERATOR, capacity=3)
    agent_drain(agent_id="a2", actor=OPERATOR)
    agent_register(pool=pool, agent_id="a2", actor=OPERATOR, capacity=1)
    Agent.objects.filter(agent_id="a3").update(status=Agent.Status.DRAINING)  # an interrupted drain
    agent_register(pool=pool, agent_id="a3", actor=OPERATOR)
    agent_deregister(agent_id="a3", actor=as_agent("a3"))
    # Alerts: acknowledge one, resolve it; the conditions resolve others on their own above.
    alert = Alert.objects.filter(status=Alert.Status.OPEN).first() or _raise_one()
    alert_acknowledge(alert_id=alert.alert_id, actor=OPERATOR)
    alert_resolve(alert_id=alert.alert_id, actor=OPERATOR)

    changes = _assert_all_gated(gate_calls, since)
    seen = {(machine, f, t) for machine, f, t in changes}
    # The scene really walked the paths this test is about.
    for expected in [
        ("assignment", "active", "active"),  # failover to another agent
        ("assignment", "active", "pending"),  # failover with no room
        ("assignment", "pending", "active"),  # rebalance
        ("assignment", "active", "idle"), ("assignment", "idle", "expired"),
        ("assignment", "active", "releasing"), ("assignment", "releasing", "released"),
        ("agent", "stale", "active"), ("agent", "inactive", "active"), ("agent", "draining", "active"),
        ("agent", "active", "draining"), ("agent", "draining", "inactive"),
        ("alert", "open", "acknowledged"), ("alert", "acknowledged", "resolved"), ("alert", "open", "resolved"),
    ]:
        assert expected in seen, (expected, changes)


def _raise_one():
    alert, _ = alert_raise(kind=Alert.Kind.CONFLICT_BURST, actor=OPERATOR, message="test", profile_id="g5")
    return alert


@pytest.mark.django_db(transaction=True)
def test_every_wait_path_asks_its_table(gate_calls):
    """Queued requests (assignments/waits.py): hand-over, preemption, wait timeout, cancellation by
    the requester and by failover (the cycle sweep's expiry is `wait_expire` too: the same path)."""
    pool = make_pool("wait-gates", preemption=True)
    for name in ("h", "w1", "w2", "w3"):
        agent_register(pool=pool, agent_id=name, actor=OPERATOR, capacity=3)
    for pid in ("q0", "q1", "q2"):
        make_profile(pid, pool="wait-gates")
    since = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    def wait(agent_id, profile_id, **kw):
        return assignment_take(agent_id=agent_id, profile_id=profile_id, actor=as_agent(agent_id),
                               wait_seconds=60, **kw).assignments[0]

    held = assignment_create(profile_id="q0", agent_id="h", actor=as_agent("h"))
    wait("w1", "q0")
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("h"))  # hand-over: pending → active
    wait("h", "q0", priority=10)  # preempts w1: active → releasing
    cancelled = wait("w2", "q0")
    assignment_release(assignment_id=cancelled.assignment_id, actor=as_agent("w2"))  # pending → released
    wait("w3", "q0")
    agent_mark_stale(agent_id="w3", actor=OPERATOR)  # its request: pending → released
    timed_out = wait("w2", "q0")
    waits_sweep(actor=OPERATOR, now=timezone.now() + timedelta(seconds=120))  # pending → expired

    changes = _assert_all_gated(gate_calls, since)
    seen = {(machine, f, t) for machine, f, t in changes}
    for expected in [
        ("assignment", "pending", "active"), ("assignment", "active", "releasing"),
        ("assignment", "pending", "released"), ("assignment", "pending", "expired"),
    ]:
        assert expected in seen, (expected, changes)
    assert Assignment.objects.get(pk=timed_out.pk).status == Assignment.Status.EXPIRED


@pytest.mark.django_db
def test_a_refused_transition_changes_nothing_and_records_nothing(gate_calls):
    pool = make_pool("refusals")
    make_profile("r0", pool="refusals")
    agent_register(pool=pool, agent_id="d1", actor=OPERATOR)
    agent_drain(agent_id="d1", actor=OPERATOR)
    before = Event.objects.count()
    # A drained agent may not set itself active: that is for registration only.
    with pytest.raises(InvalidTransition):
        agent_set_status(agent_id="d1", status="active", actor=as_agent("d1"))
    assert Agent.objects.get(agent_id="d1").status == Agent.Status.INACTIVE
    assert Event.objects.count() == before
