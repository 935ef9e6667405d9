"""The cache of live assignments: written on commit, read by the selector, repaired by the
reconcile job — and a Redis outage degrades nothing but the cache."""

import pytest
from django.core.cache import cache
from django.test import override_settings

from agents.services import agent_heartbeat
from assignments import cache as live_cache
from assignments.jobs import assignments_reconcile_cache
from assignments.models import Alert, Event
from assignments.selectors import assignment_live_for_profile
from assignments.services import assignment_release
from config.actors import Actor
from tests.jobs.conftest import ago, set_scene, start_redis, stop_redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

OUTAGE_REDIS_PORT = 6391


def _cached(profile_id):
    return cache.get(live_cache.profile_key(profile_id))


def test_a_take_and_a_release_are_written_to_the_cache_on_commit(fleet):
    taken = fleet.take(fleet.profiles[0], fleet.a)
    entry = _cached("prof-0")["a"]
    assert (entry["assignment_id"], entry["agent_id"], entry["status"], entry["fencing_token"]) == (
        str(taken.assignment_id), "agent-a", "active", taken.fencing_token)
    # Only profiles are cached (nothing read per-agent lists: they were dropped, issue 15).
    assert cache.keys("asg:agent:*") == []

    assignment_release(assignment_id=taken.assignment_id, actor=Actor.for_agent("agent-a"))
    assert _cached("prof-0") == {"a": None}


def test_the_refresh_statement_stores_exactly_the_snapshot_of_the_row(fleet):
    """The after-commit refresh reads its snapshots with a named statement: the same data, key for
    key and value for value, as a snapshot of the ORM's row (waiting ones included: no agent)."""
    from assignments.models import Assignment

    taken = fleet.take(fleet.profiles[0], fleet.a)
    Assignment.objects.filter(pk=taken.pk).update(metadata={"k": [1, "x"]}, platform_resource_id="pod-1")
    live_cache.cache_refresh(profile_ids=["prof-0"])
    row = Assignment.objects.select_related("profile", "pool", "agent").get(pk=taken.pk)
    assert _cached("prof-0") == {"a": live_cache.snapshot(row)}
    # The statement that reads them with the event numbers after a commit gives the same entries.
    fleet.take(fleet.profiles[1], fleet.a)  # a commit on this connection: currval is defined
    _, entries = live_cache.numbers_and_holders({"prof-0", "no-such-profile"})
    assert entries == {live_cache.profile_key("prof-0"): {"a": live_cache.snapshot(row)},
                       live_cache.profile_key("no-such-profile"): {"a": None}}
    Assignment.objects.filter(pk=taken.pk).update(agent=None, status="pending")
    live_cache.cache_refresh(profile_ids=["prof-0"])
    row.refresh_from_db()
    assert _cached("prof-0") == {"a": live_cache.snapshot(row)} and _cached("prof-0")["a"]["agent_id"] is None
    # A request queued behind the holder (pending with an agent) is not the holder.
    from django.utils import timezone

    Assignment.objects.filter(pk=taken.pk).update(agent=fleet.a, status="pending", wait_until=timezone.now())
    live_cache.cache_refresh(profile_ids=["prof-0"])
    assert _cached("prof-0") == {"a": None}
    assert live_cache.numbers_and_holders({"prof-0"})[1] == {live_cache.profile_key("prof-0"): {"a": None}}


def test_the_selector_answers_from_the_cache_and_falls_back_to_the_database(fleet, django_assert_num_queries):
    taken = fleet.take(fleet.profiles[0], fleet.a)
    with django_assert_num_queries(0):
        cached = assignment_live_for_profile("prof-0")
    assert (cached.assignment_id, cached.agent.agent_id, cached.profile.profile_id, cached.pool.name) == (
        taken.assignment_id, "agent-a", "prof-0", fleet.pool.name)

    cache.delete(live_cache.profile_key("prof-0"))
    with django_assert_num_queries(1):
        assert assignment_live_for_profile("prof-0").assignment_id == taken.assignment_id
    assert _cached("prof-0")["a"]["assignment_id"] == str(taken.assignment_id)  # filled on the miss
    with django_assert_num_queries(1):
        assert assignment_live_for_profile("prof-1") is None
    with django_assert_num_queries(0):
        assert assignment_live_for_profile("prof-1") is None


def test_reconciliation_repairs_a_wrong_holder_and_a_missing_entry_and_counts_them(fleet, job_actor):
    held = fleet.take(fleet.profiles[0], fleet.a)
    other = fleet.take(fleet.profiles[1], fleet.b)
    # Drift: an invalidation that never arrived (the cache still names an old holder of a free
    # profile), a wrong token, and an entry lost with Redis.
    stale = dict(_cached("prof-0")["a"], fencing_token=held.fencing_token - 1)
    cache.set(live_cache.profile_key("prof-0"), {"a": stale})
    cache.set(live_cache.profile_key("prof-2"), {"a": dict(stale, agent_id="agent-b")})
    cache.delete(live_cache.profile_key("prof-1"))

    counts = assignments_reconcile_cache(actor=job_actor)
    assert (counts["stale"], counts["missing"]) == (2, 1)
    assert _cached("prof-0")["a"]["fencing_token"] == held.fencing_token
    assert _cached("prof-1")["a"]["assignment_id"] == str(other.assignment_id)
    assert _cached("prof-2") == {"a": None}
    assert assignment_live_for_profile("prof-2") is None

    again = assignments_reconcile_cache(actor=job_actor)
    assert (again["stale"], again["missing"]) == (0, 0)


def test_concurrent_reconciliations_repair_each_entry_once(fleet, job_actor, run_in_threads):
    for i, profile in enumerate(fleet.profiles):
        fleet.take(profile, fleet.a)
    for profile in fleet.profiles:
        cache.delete(live_cache.profile_key(profile.profile_id))

    results = run_in_threads(4, lambda i: assignments_reconcile_cache(actor=job_actor))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["missing"] for r in results if "missing" in r) == len(fleet.profiles)


def _api(client, method, path, agent_id, body=None):
    # The factories give agent X the token "agt_X" (tests/factories.py).
    auth = {"HTTP_AUTHORIZATION": f"Token agt_{agent_id}"}
    if body is None:
        return getattr(client, method)(path, **auth)
    return getattr(client, method)(path, body, content_type="application/json", **auth)


def test_redis_down_while_profiles_are_taken_and_released_then_reconciliation_repairs_the_cache(
    fleet, job_actor, client
):
    redis = start_redis(OUTAGE_REDIS_PORT)
    location = f"redis://127.0.0.1:{OUTAGE_REDIS_PORT}/0"
    caches = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": "tether-outage",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5, "IGNORE_EXCEPTIONS": True},
        }
    }
    # One Redis for everything, as in production: the cache and the channel layer go down together.
    layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                          "CONFIG": {"hosts": [location], "prefix": "tether-outage:asgi"}}}
    try:
        with override_settings(CACHES=caches, CHANNEL_LAYERS=layers, REDIS_URL=location):
            r = _api(client, "post", "/api/assignments", "agent-a", {"profile_id": "prof-0", "agent_id": "agent-a"})
            assert r.status_code == 201, r.content
            first = r.json()["assignment_id"]
            second = fleet.take(fleet.profiles[1], fleet.a)
            assert _cached("prof-0")["a"]["assignment_id"] == first

            stop_redis(redis)
            # Nothing fails while Redis is down: the API takes, releases and answers from the database.
            r = _api(client, "get", "/api/profiles/prof-0/assignment", "agent-b")
            assert (r.status_code, r.json()["available"], r.json()["assignment"]["assignment_id"]) == (200, False, first)
            r = _api(client, "delete", f"/api/assignments/{first}", "agent-a")
            assert r.status_code == 200, r.content
            assert r.json()["status"] == "released"
            r = _api(client, "post", "/api/assignments", "agent-b", {"profile_id": "prof-2", "agent_id": "agent-b"})
            assert r.status_code == 201, r.content
            third = r.json()["assignment_id"]
            r = _api(client, "get", "/api/profiles/prof-0/assignment", "agent-b")
            assert (r.status_code, r.json()["available"]) == (200, True)
            r = _api(client, "get", "/api/profiles/prof-2/assignment", "agent-b")
            assert r.json()["assignment"]["assignment_id"] == third
            r = _api(client, "post", "/api/agents/agent-a/heartbeat", "agent-a",
                     {"assignments": [str(second.assignment_id)]})
            assert (r.status_code, r.json()["revoked"]) == (200, [])
            assert client.get("/health").json()["checks"]["cache"]["ok"] is False
            assert assignments_reconcile_cache(actor=job_actor)["cache_unavailable"] is True

            redis = start_redis(OUTAGE_REDIS_PORT)  # back, and empty
            counts = assignments_reconcile_cache(actor=job_actor)
            # prof-1 and prof-2 held: two entries restored.
            assert (counts["missing"], counts["stale"]) == (2, 0)
            assert _cached("prof-0") is None  # free and not read since: nothing to store
            assert _cached("prof-1")["a"]["assignment_id"] == str(second.assignment_id)
            assert _cached("prof-2")["a"]["assignment_id"] == third
            assert assignments_reconcile_cache(actor=job_actor)["missing"] == 0
            r = _api(client, "get", "/api/profiles/prof-2/assignment", "agent-a")
            assert r.json()["assignment"]["assignment_id"] == third
    finally:
        stop_redis(redis)


def test_a_heartbeat_that_stops_reporting_a_held_assignment_raises_one_alert(fleet):
    held = fleet.take(fleet.profiles[0], fleet.a)
    actor = Actor.for_agent("agent-a")
    agent_heartbeat(agent_id="agent-a", actor=actor, reported=[held.assignment_id])

    # It held the assignment at its previous heartbeat and no longer reports it: lost.
    reply = agent_heartbeat(agent_id="agent-a", actor=actor, reported=[])
    assert reply.assigned == [held.assignment_id]
    alerts = Event.objects.filter(type="alert.raised", data__kind="assignment_lost")
    assert [(e.agent_id, e.profile_id, e.data["assignment_id"]) for e in alerts] == [
        ("agent-a", "prof-0", str(held.assignment_id))]
    assert list(Alert.objects.values_list("kind", "agent_id", "assignment_id", "status")) == [
        ("assignment_lost", "agent-a", held.assignment_id, "open")]

    agent_heartbeat(agent_id="agent-a", actor=actor, reported=[])
    assert alerts.count() == 1  # once per loss


def test_an_assignment_just_handed_over_is_not_an_alert_before_the_agent_was_told(fleet, job_actor):
    from agents.jobs import agents_mark_overdue_stale
    from agents.models import Agent

    held = fleet.take(fleet.profiles[0], fleet.a)
    agent_heartbeat(agent_id="agent-b", actor=Actor.for_agent("agent-b"), reported=[])
    set_scene(Agent, fleet.a.pk, last_heartbeat=ago(60))
    agents_mark_overdue_stale(actor=job_actor)

    reply = agent_heartbeat(agent_id="agent-b", actor=Actor.for_agent("agent-b"), reported=[])
    assert reply.assigned == [held.assignment_id]
    assert not Alert.objects.filter(kind="assignment_lost").exists()
