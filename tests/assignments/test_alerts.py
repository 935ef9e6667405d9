"""Alerts: raised where operators must act, one per condition, acknowledged by operators only."""

import pytest

from agents.services import agent_heartbeat, agent_mark_stale
from assignments.alerts import CONFLICT_BURST_COUNT, alert_acknowledge, alert_raise, alert_resolve
from assignments.models import Alert, Event
from assignments.services import assignment_create
from config.actors import Actor
from config.errors import Forbidden, ProfileTaken
from pools.services import pool_rebalance
from tests.factories import AgentFactory, PoolFactory, ProfileFactory

pytestmark = pytest.mark.django_db


def _types(after=0):
    return list(Event.objects.filter(seq__gt=after, type__startswith="alert.").values_list("type", flat=True))


def test_stale_agent_whose_work_cannot_move_raises_one_alert_per_condition(operator_actor):
    pool = PoolFactory()
    lost = AgentFactory(pool=pool)
    assignment_create(profile_id=ProfileFactory().profile_id, agent_id=lost.agent_id, actor=operator_actor)

    agent_mark_stale(agent_id=lost.agent_id, actor=operator_actor)

    alerts = {a.kind: a for a in Alert.objects.all()}
    assert set(alerts) == {Alert.Kind.AGENT_STALE, Alert.Kind.POOL_NO_HEALTHY_AGENT}
    waiting = alerts[Alert.Kind.POOL_NO_HEALTHY_AGENT]
    assert waiting.status == Alert.Status.OPEN and waiting.pool == pool.name
    assert waiting.severity == Alert.Severity.CRITICAL and waiting.data["waiting"] == 1
    assert alerts[Alert.Kind.AGENT_STALE].agent_id == lost.agent_id
    assert _types() == ["alert.raised", "alert.raised"]

    # A second agent of the same pool lost while the first alert is unresolved: counted, not repeated.
    other = AgentFactory(pool=pool)
    assignment_create(profile_id=ProfileFactory().profile_id, agent_id=other.agent_id, actor=operator_actor)
    mark = Event.objects.order_by("-seq").values_list("seq", flat=True).first()
    agent_mark_stale(agent_id=other.agent_id, actor=operator_actor)
    waiting.refresh_from_db()
    assert waiting.occurrences == 2
    assert Alert.objects.filter(kind=Alert.Kind.POOL_NO_HEALTHY_AGENT).count() == 1
    assert _types(mark) == ["alert.raised"]  # only the second agent's own stale alert


def test_waiting_alert_resolves_when_a_healthy_agent_takes_the_waiting_work(operator_actor):
    pool = PoolFactory()
    lost = AgentFactory(pool=pool)
    assignment_create(profile_id=ProfileFactory().profile_id, agent_id=lost.agent_id, actor=operator_actor)
    agent_mark_stale(agent_id=lost.agent_id, actor=operator_actor)
    AgentFactory(pool=pool, health_score=1.0)

    moves = pool_rebalance(pool=pool, actor=operator_actor)

    assert len(moves.moved) == 1
    alert = Alert.objects.get(kind=Alert.Kind.POOL_NO_HEALTHY_AGENT)
    assert alert.status == Alert.Status.RESOLVED and alert.resolved_at is not None
    event = Event.objects.filter(type="alert.resolved").get()
    assert event.pool == pool.name and event.data["alert_id"] == str(alert.alert_id)


def test_stale_alert_resolves_when_the_agent_heartbeats_again(operator_actor):
    agent = AgentFactory(pool=PoolFactory())
    agent_mark_stale(agent_id=agent.agent_id, actor=operator_actor)
    assert Alert.objects.get().status == Alert.Status.OPEN

    agent_heartbeat(agent_id=agent.agent_id, actor=Actor.for_agent(agent.agent_id))

    assert Alert.objects.get().status == Alert.Status.RESOLVED
    # Stale again later: a new alert, since the first one is resolved.
    agent_mark_stale(agent_id=agent.agent_id, actor=operator_actor)
    assert Alert.objects.filter(status=Alert.Status.OPEN).count() == 1


def test_operator_acknowledges_an_alert_and_an_agent_may_not(operator_actor):
    agent = AgentFactory(pool=PoolFactory())
    agent_mark_stale(agent_id=agent.agent_id, actor=operator_actor)
    alert = Alert.objects.get()

    with pytest.raises(Forbidden):
        alert_acknowledge(alert_id=alert.alert_id, actor=Actor.for_agent(agent.agent_id))
    alert.refresh_from_db()
    assert alert.status == Alert.Status.OPEN

    alert_acknowledge(alert_id=alert.alert_id, actor=operator_actor)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.ACKNOWLEDGED
    assert alert.acknowledged_by == str(operator_actor) and alert.acknowledged_at is not None
    ack = Event.objects.get(type="alert.acknowledged")
    assert (ack.from_status, ack.to_status, ack.actor) == ("open", "acknowledged", str(operator_actor))

    # Acknowledged is still unresolved: the same condition does not raise a second alert.
    _, raised = alert_raise(kind=Alert.Kind.AGENT_STALE, actor=operator_actor, message="again",
                            dedup_key=alert.dedup_key)
    assert not raised
    # Acknowledging twice changes nothing; an operator resolves it.
    alert_acknowledge(alert_id=alert.alert_id, actor=operator_actor)
    assert Event.objects.filter(type="alert.acknowledged").count() == 1
    alert_resolve(alert_id=alert.alert_id, actor=operator_actor)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.RESOLVED


def test_acknowledging_an_unknown_alert_is_not_found(operator_actor):
    from config.errors import NotFound

    with pytest.raises(NotFound):
        alert_acknowledge(alert_id="not-a-uuid", actor=operator_actor)
    with pytest.raises(NotFound):
        alert_acknowledge(alert_id="6b0c3b9e-0000-4000-8000-000000000000", actor=operator_actor)


def test_a_burst_of_refused_takes_of_one_profile_raises_a_conflict_alert(operator_actor):
    pool = PoolFactory()
    holder, other = AgentFactory(pool=pool), AgentFactory(pool=pool)
    profile = ProfileFactory()
    assignment_create(profile_id=profile.profile_id, agent_id=holder.agent_id, actor=operator_actor)

    for i in range(CONFLICT_BURST_COUNT):
        assert not Alert.objects.exists(), f"alert raised after only {i} refusals"
        with pytest.raises(ProfileTaken):
            assignment_create(profile_id=profile.profile_id, agent_id=other.agent_id,
                              actor=Actor.for_agent(other.agent_id))

    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.CONFLICT_BURST and alert.profile_id == profile.profile_id
    assert Event.objects.filter(type="assignment.conflict").count() == CONFLICT_BURST_COUNT


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_raises_of_one_condition_make_one_alert(run_in_threads, operator_actor):
    results = run_in_threads(
        6, lambda i: alert_raise(kind=Alert.Kind.AGENT_STALE, actor=operator_actor, message=f"#{i}", dedup_key="k")
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(1 for _, raised in results if raised) == 1
    alert = Alert.objects.get()
    assert alert.occurrences == 6
    assert Event.objects.filter(type="alert.raised").count() == 1


def test_operator_acknowledges_and_resolves_alerts_in_the_admin_through_the_services(admin_client, operator_actor):
    agent = AgentFactory(pool=PoolFactory())
    agent_mark_stale(agent_id=agent.agent_id, actor=operator_actor)
    alert = Alert.objects.get()
    assert admin_client.get("/admin/assignments/alert/").status_code == 200

    response = admin_client.post("/admin/assignments/alert/", {"action": "acknowledge", "_selected_action": [alert.pk]})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.status == Alert.Status.ACKNOWLEDGED and alert.acknowledged_by.startswith("user:")
    admin_client.post("/admin/assignments/alert/", {"action": "resolve", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.status == Alert.Status.RESOLVED
    assert list(Event.objects.filter(type__startswith="alert.").values_list("type", flat=True)) == [
        "alert.raised", "alert.acknowledged", "alert.resolved"]
