import threading
import time

import pytest

from agents.models import Agent
from agents.services import agent_deregister, agent_drain, agent_mark_stale, agent_register, agent_set_status
from assignments.alerts import ALERTS_ACTOR, alert_key_pool_no_healthy_agent, alert_raise
from assignments.events import recorded_transaction
from assignments.models import Alert, Assignment, Event
from assignments.services import assignment_create, assignment_release
from pools.services import pool_fail_over, pool_rebalance
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def _take(profile_id, agent_id):
    return assignment_create(profile_id=profile_id, agent_id=agent_id, actor=as_agent(agent_id))


def _lost_agent_holding(pool_name, profile_ids):
    """A pool whose agent "lost" holds these profiles and, busy, gets no work from the pool."""
    pool = make_pool(pool_name)
    make_agent(pool, "lost", capacity=len(profile_ids))
    for p in profile_ids:
        make_profile(p)
        _take(p, "lost")
    agent_set_status(agent_id="lost", status="busy", actor=as_agent("lost"))
    return pool


def _while_its_failover_commits(run_in_threads, seconds, other):
    """"lost"'s failover in one thread, holding its transaction (and the pool's move lock) open for
    `seconds`; `other()` in a second thread once the failover has run. Returns (how many the
    failover left waiting, what `other` returned)."""
    failover_holding = threading.Event()

    def work(i):
        if i == 0:
            with recorded_transaction():
                moves = pool_fail_over(agent=Agent.objects.select_related("pool").get(agent_id="lost"), actor=OPERATOR)
                failover_holding.set()
                time.sleep(seconds)  # the other one runs meanwhile
            return len(moves.waiting)
        assert failover_holding.wait(10)
        return other()

    return run_in_threads(2, work)


def test_lost_agents_assignments_move_inside_its_pool_only():
    prod, other = make_pool("prod"), make_pool("other")
    make_agent(prod, "lost", capacity=3)
    make_agent(prod, "healthy", capacity=3)
    make_agent(other, "elsewhere", capacity=10)
    for p in ("p1", "p2"):
        make_profile(p)
        _take(p, "lost")

    agent_mark_stale(agent_id="lost", actor=OPERATOR)

    moved = Assignment.objects.filter(profile__profile_id__in=["p1", "p2"]).select_related("agent")
    assert {a.agent.agent_id for a in moved} == {"healthy"}
    assert all(a.status == Assignment.Status.ACTIVE and a.pool.name == "prod" for a in moved)
    events = Event.objects.filter(type="assignment.reassigned").order_by("seq")
    assert [(e.data["from_agent_id"], e.data["to_agent_id"]) for e in events] == [("lost", "healthy")] * 2


def test_failover_respects_capacity_and_leaves_the_rest_waiting():
    pool = make_pool()
    make_agent(pool, "lost", capacity=3)
    make_agent(pool, "full", capacity=1)
    make_agent(pool, "roomy", capacity=2)
    make_profile("held-by-full")
    _take("held-by-full", "full")
    for p in ("p1", "p2", "p3"):
        make_profile(p)
        _take(p, "lost")

    moves = pool_fail_over(agent=Agent.objects.get(agent_id="lost"), actor=OPERATOR)

    assert len(moves.moved) == 2 and len(moves.waiting) == 1
    live = Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES)
    per_agent = {}
    for a in live.select_related("agent"):
        key = a.agent.agent_id if a.agent else None
        per_agent[key] = per_agent.get(key, 0) + 1
    assert per_agent == {"full": 1, "roomy": 2, None: 1}
    waiting = live.get(agent__isnull=True)
    assert waiting.status == Assignment.Status.PENDING
    # The oldest assignments move first; the newest waits.
    assert waiting.profile.profile_id == "p3"


def test_no_eligible_agent_leaves_everything_pending_and_nothing_orphaned():
    pool = make_pool(min_health_score=0.5)
    make_agent(pool, "lost")
    make_agent(pool, "sick", load_metrics={"cpu": 100, "memory": 100, "error_rate": 1})  # health 0
    make_agent(pool, "busy-one")
    agent_set_status(agent_id="busy-one", status="busy", actor=as_agent("busy-one"))
    make_profile("p1")
    _take("p1", "lost")

    agent_deregister(agent_id="lost", actor=OPERATOR)

    a = Assignment.objects.get(profile__profile_id="p1")
    assert a.status == Assignment.Status.PENDING and a.agent is None
    assert not Assignment.objects.filter(agent__agent_id="lost", status__in=Assignment.LIVE_STATUSES).exists()


def test_waiting_assignment_goes_to_the_next_agent_that_registers():
    pool = make_pool()
    make_agent(pool, "lost")
    make_profile("p1")
    _take("p1", "lost")
    agent_mark_stale(agent_id="lost", actor=OPERATOR)
    assert Assignment.objects.get(profile__profile_id="p1").agent is None

    make_agent(pool, "newcomer")

    a = Assignment.objects.get(profile__profile_id="p1")
    assert a.agent.agent_id == "newcomer" and a.status == Assignment.Status.ACTIVE


def test_releasing_assignments_of_a_lost_agent_are_released_not_moved():
    pool = make_pool()
    make_agent(pool, "lost")
    make_agent(pool, "other")
    make_profile("p1")
    held = _take("p1", "lost")
    from django.contrib.auth.models import User

    from config.actors import Actor

    operator = Actor.for_user(User.objects.create_user("op", is_staff=True))
    assignment_release(assignment_id=held.assignment_id, actor=operator)
    held.refresh_from_db()
    assert held.status == Assignment.Status.RELEASING

    agent_mark_stale(agent_id="lost", actor=OPERATOR)

    held.refresh_from_db()
    assert held.status == Assignment.Status.RELEASED
    assert held.release_reason == Assignment.ReleaseReason.AGENT_LOST


def test_drain_moves_everything_and_marks_the_agent_drained():
    pool = make_pool()
    make_agent(pool, "leaving", capacity=2)
    make_agent(pool, "staying", capacity=2)
    for p in ("p1", "p2"):
        make_profile(p)
        _take(p, "leaving")

    agent = agent_drain(agent_id="leaving", actor=OPERATOR)

    assert agent.status == Agent.Status.INACTIVE
    assert set(Assignment.objects.filter(status="active").values_list("agent__agent_id", flat=True)) == {"staying"}
    types = list(Event.objects.filter(agent_id="leaving").order_by("seq").values_list("type", flat=True))
    assert types[-1] == "agent.drained"
    assert "agent.status_changed" in types


def test_drain_releases_what_an_operator_had_asked_its_agent_to_release():
    from django.contrib.auth.models import User

    from config.actors import Actor

    pool = make_pool()
    make_agent(pool, "leaving")
    make_agent(pool, "staying")
    make_profile("p1")
    held = _take("p1", "leaving")
    operator = Actor.for_user(User.objects.create_user("op", is_staff=True))
    assignment_release(assignment_id=held.assignment_id, actor=operator)  # → releasing, agent alive

    agent_drain(agent_id="leaving", actor=operator)

    held.refresh_from_db()
    assert held.status == Assignment.Status.RELEASED
    assert held.release_reason == Assignment.ReleaseReason.AGENT_LOST


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_rebalance_never_resolves_the_alert_of_a_failover_still_committing(run_in_threads):
    """The pool's "no healthy agent" alert is open from an earlier loss and nothing waits right now.
    A failover that leaves work waiting (and counts one more occurrence of that alert) is committing
    while a rebalance runs: the rebalance must not read "nothing waits" from before the failover and
    then resolve the alert the failover has just renewed (pool_rebalance reads under the move lock)."""
    pool = _lost_agent_holding("racy", ["r1", "r2"])
    alert_raise(kind=Alert.Kind.POOL_NO_HEALTHY_AGENT, actor=ALERTS_ACTOR, message="earlier loss",
                dedup_key=alert_key_pool_no_healthy_agent("racy"), pool="racy")

    waiting, _moves = _while_its_failover_commits(run_in_threads, 1.0, lambda: pool_rebalance(pool=pool, actor=OPERATOR))
    assert waiting == 2
    assert Assignment.objects.waiting().filter(pool__name="racy").count() == 2
    alert = Alert.objects.get(dedup_key=alert_key_pool_no_healthy_agent("racy"))
    assert alert.status == Alert.Status.OPEN and alert.occurrences == 2


def test_a_registration_resolves_the_pools_alert_once_nothing_waits():
    pool = make_pool("healed")
    alert_raise(kind=Alert.Kind.POOL_NO_HEALTHY_AGENT, actor=ALERTS_ACTOR, message="earlier loss",
                dedup_key=alert_key_pool_no_healthy_agent("healed"), pool="healed")

    make_agent(pool, "newcomer")

    assert Alert.objects.get(dedup_key=alert_key_pool_no_healthy_agent("healed")).status == Alert.Status.RESOLVED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_registration_racing_a_failover_gets_the_work_it_left_waiting(run_in_threads):
    """The registration asks "does anything wait?" without the pool's move lock, after its commit:
    a failover holding that lock while the registration starts commits first (the registration
    takes the same lock), so what it left waiting is seen and placed on the newcomer."""
    pool = _lost_agent_holding("racing", ["q1", "q2"])

    waiting, _ = _while_its_failover_commits(
        run_in_threads, 0.5, lambda: agent_register(pool=pool, agent_id="newcomer", actor=OPERATOR, capacity=2)
    )
    assert waiting == 2
    placed = Assignment.objects.filter(profile__profile_id__in=["q1", "q2"], status=Assignment.Status.ACTIVE)
    assert sorted(a.agent.agent_id for a in placed) == ["newcomer", "newcomer"]
