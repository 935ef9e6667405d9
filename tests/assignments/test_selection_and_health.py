"""Choosing a profile by requirements (atomic, released longest ago first), several profiles at once
(all or none), outcome reports and quarantine, the pool's cooldown and daily quota."""

from datetime import timedelta

import pytest
from django.utils import timezone

from assignments.jobs import waits_sweep
from assignments.models import Alert, Assignment, Event, Profile
from assignments.profile_health import (
    health_after,
    profile_quarantine_clear,
    profile_report,
)
from assignments.services import assignment_create, assignment_release
from assignments.takes import assignment_take
from config.errors import (
    AgentAtCapacity,
    Conflict,
    Forbidden,
    NoProfileAvailable,
    NotFound,
    ProfileCoolingDown,
    ProfileQuarantined,
    QuotaExceeded,
    ValidationFailed,
)
from tests.helpers import OPERATOR, as_agent, make_agent, make_pool, make_profile

S = Assignment.Status


def select(agent_id, requirements, **kw):
    return assignment_take(agent_id=agent_id, profile_requirements=requirements, actor=as_agent(agent_id), **kw)


@pytest.fixture
def fleet(db):
    pool = make_pool("sel")
    make_pool("other")
    for i in range(4):
        make_agent(pool, f"a{i}", capacity=4)
    make_profile("eu-1", pool="sel", tags=["eu", "mobile"], region="eu")
    make_profile("eu-2", pool="sel", tags=["eu"], region="eu")
    make_profile("us-1", pool="sel", tags=["us"], region="us")
    make_profile("loose", tags=["eu", "mobile"], region="eu")  # no pool: any pool's agents may take it
    make_profile("elsewhere", pool="other", tags=["eu"], region="eu")
    make_profile("sel-x", pool="sel")
    return pool


def test_selection_matches_all_tags_region_and_pool(fleet):
    got = select("a0", {"tags": ["eu", "mobile"], "pool": "sel"}).assignments[0]
    assert got.profile.profile_id == "eu-1" and got.status == S.ACTIVE
    assert select("a1", {"region": "us"}).assignments[0].profile.profile_id == "us-1"
    created = Event.objects.get(type="assignment.created", assignment_id=got.assignment_id)
    assert created.data["requirements"] == {"tags": ["eu", "mobile"], "pool": "sel"}


def test_selection_prefers_the_profile_released_longest_ago_never_released_first(fleet):
    now = timezone.now()
    Profile.objects.filter(profile_id="eu-1").update(last_released_at=now - timedelta(minutes=1))
    Profile.objects.filter(profile_id="loose").update(last_released_at=now - timedelta(minutes=5))
    assert select("a0", {"tags": ["eu"]}).assignments[0].profile.profile_id == "eu-2"  # never released
    assert select("a1", {"tags": ["eu"]}).assignments[0].profile.profile_id == "loose"
    assert select("a2", {"tags": ["eu"]}).assignments[0].profile.profile_id == "eu-1"
    with pytest.raises(NoProfileAvailable):
        select("a3", {"tags": ["eu"]})  # "elsewhere" is another pool's


def test_selection_skips_disabled_quarantined_unhealthy_and_cooling_profiles(fleet):
    Profile.objects.filter(profile_id="eu-1").update(enabled=False)
    Profile.objects.filter(profile_id="eu-2").update(quarantined=True)
    Profile.objects.filter(profile_id="loose").update(health_score=0.05)
    with pytest.raises(NoProfileAvailable) as exc:
        select("a0", {"tags": ["eu"]})
    assert exc.value.code == "no_profile_available"
    Profile.objects.filter(profile_id="loose").update(health_score=0.9, last_released_at=timezone.now())
    fleet.profile_cooldown_seconds = 60
    fleet.save(update_fields=["profile_cooldown_seconds"])
    with pytest.raises(NoProfileAvailable):
        select("a0", {"tags": ["eu"]})


def test_each_selection_takes_its_own_values_in_a_statement_of_the_same_shape(fleet):
    """On PostgreSQL one statement per shape is compiled once (assignments/selection.py): each call's
    requirements and the health threshold as set now must be what it runs with."""
    from django.test import override_settings

    assert select("a0", {"region": "us"}).assignments[0].profile.profile_id == "us-1"
    with pytest.raises(NoProfileAvailable):
        select("a1", {"region": "us"})  # the one us profile is held now
    first = select("a1", {"region": "eu"}).assignments[0].profile.profile_id
    assert first in {"eu-1", "eu-2", "loose"}
    Profile.objects.filter(profile_id__in=["eu-1", "eu-2", "loose"]).update(health_score=0.6)
    with override_settings(TETHER_PROFILE_MIN_HEALTH_SCORE=0.7), pytest.raises(NoProfileAvailable):
        select("a2", {"region": "eu"})
    with override_settings(TETHER_PROFILE_MIN_HEALTH_SCORE=0.5):
        assert select("a2", {"region": "eu"}).assignments[0].profile.profile_id in {"eu-1", "eu-2", "loose"} - {first}


@pytest.mark.parametrize("bad", [{}, {"color": "red"}, {"tags": "eu"}, {"tags": [1]}, "eu", {"region": 5}])
def test_bad_requirements_are_a_validation_error(fleet, bad):
    with pytest.raises(ValidationFailed):
        select("a0", bad)


def test_exactly_one_way_of_naming_profiles(fleet):
    with pytest.raises(ValidationFailed):
        assignment_take(agent_id="a0", actor=as_agent("a0"), profile_id="eu-1", profile_requirements={"tags": ["eu"]})
    with pytest.raises(ValidationFailed):
        assignment_take(agent_id="a0", actor=as_agent("a0"))


def test_selection_with_wait_queues_for_a_matching_held_profile(fleet):
    holder = select("a0", {"region": "us"}).assignments[0]
    result = select("a1", {"region": "us"}, wait_seconds=30)
    assert result.queued and result.assignments[0].status == S.PENDING
    assignment_release(assignment_id=holder.assignment_id, actor=as_agent("a0"))
    assert Assignment.objects.get(pk=result.assignments[0].pk).status == S.ACTIVE


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_selection_race_many_requests_few_profiles_all_distinct_the_rest_409(run_in_threads):
    pool = make_pool("sel-race")
    for i in range(24):
        make_agent(pool, f"r{i}", capacity=2)
    for p in range(6):
        make_profile(f"sp{p}", pool="sel-race", tags=["eu"])
    make_profile("us-only", pool="sel-race", tags=["us"])

    results = run_in_threads(24, lambda i: select(f"r{i}", {"tags": ["eu"]}))
    won = [r.assignments[0] for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 6
    assert sorted(a.profile.profile_id for a in won) == [f"sp{p}" for p in range(6)]
    assert all(isinstance(r, NoProfileAvailable) for r in refused), refused
    assert len(refused) == 18
    assert Assignment.objects.holding().count() == 6


def test_several_profiles_all_or_none(fleet):
    assignment_create(profile_id="us-1", agent_id="a1", actor=as_agent("a1"))
    before = Assignment.objects.count()
    with pytest.raises(Conflict) as exc:
        assignment_take(agent_id="a0", actor=as_agent("a0"), profile_ids=["eu-1", "us-1", "eu-2"])
    assert [h["profile_id"] for h in exc.value.details["held"]] == ["us-1"]
    assert Assignment.objects.count() == before  # none taken
    got = assignment_take(agent_id="a0", actor=as_agent("a0"), profile_ids=["eu-2", "eu-1"]).assignments
    assert [a.profile.profile_id for a in got] == ["eu-2", "eu-1"]
    assert all(a.status == S.ACTIVE for a in got)


def test_several_profiles_refusals(fleet):
    with pytest.raises(NotFound):
        assignment_take(agent_id="a0", actor=as_agent("a0"), profile_ids=["eu-1", "nope"])
    with pytest.raises(ValidationFailed):
        assignment_take(agent_id="a0", actor=as_agent("a0"), profile_ids=["eu-1", "eu-1"])
    with pytest.raises(ValidationFailed):
        assignment_take(agent_id="a0", actor=as_agent("a0"), profile_ids=["eu-1"], wait_seconds=5)
    assignment_create(profile_id="loose", agent_id="a0", actor=as_agent("a0"))
    with pytest.raises(AgentAtCapacity):  # capacity 4: one held, four more asked
        assignment_take(agent_id="a0", actor=as_agent("a0"), profile_ids=["eu-1", "eu-2", "us-1", "sel-x"])
    assert Assignment.objects.filter(agent__agent_id="a0").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_overlapping_multi_profile_takes_never_deadlock(run_in_threads):
    pool = make_pool("multi-race")
    for i in range(8):
        make_agent(pool, f"m{i}", capacity=4)
    for p in range(4):
        make_profile(f"mp{p}", pool="multi-race")
    sets = [["mp0", "mp1", "mp2"], ["mp2", "mp1", "mp0"], ["mp3", "mp1"], ["mp1", "mp3"]] * 2

    results = run_in_threads(8, lambda i: assignment_take(agent_id=f"m{i}", actor=as_agent(f"m{i}"), profile_ids=sets[i]))
    assert all(isinstance(r, Conflict) or not isinstance(r, BaseException) for r in results), results
    assert Assignment.objects.holding().count() == sum(
        len(r.assignments) for r in results if not isinstance(r, BaseException)
    )


# --- Reports and quarantine ----------------------------------------------------------------------


def test_health_moves_with_recent_outcomes():
    assert health_after(1.0, "success") == 1.0
    assert health_after(1.0, "failure") == 0.8
    assert health_after(1.0, "captcha") == 0.9
    assert health_after(0.7, "banned") == 0.0


def test_the_holder_reports_counts_and_a_non_holder_is_refused(fleet):
    a = assignment_create(profile_id="eu-1", agent_id="a0", actor=as_agent("a0"))
    profile = profile_report(profile_id="eu-1", actor=as_agent("a0"), outcome="failure", detail="timeout")
    assert (profile.failures, profile.health_score) == (1, 0.8)
    with pytest.raises(Forbidden):
        profile_report(profile_id="eu-1", actor=as_agent("a1"), outcome="success")
    assignment_release(assignment_id=a.assignment_id, actor=as_agent("a0"))
    # The last holder may still report after releasing.
    assert profile_report(profile_id="eu-1", actor=as_agent("a0"), outcome="captcha").captchas == 1
    with pytest.raises(ValidationFailed):
        profile_report(profile_id="eu-1", actor=as_agent("a0"), outcome="meh")
    event = Event.objects.filter(type="profile.reported", profile_id="eu-1").last()
    assert event.data["outcome"] == "captcha"


def test_banned_quarantines_alerts_expires_waits_and_an_operator_clears_it(fleet):
    held = assignment_create(profile_id="eu-1", agent_id="a0", actor=as_agent("a0"))
    request = assignment_take(agent_id="a1", actor=as_agent("a1"), profile_id="eu-1", wait_seconds=60).assignments[0]
    profile = profile_report(profile_id="eu-1", actor=as_agent("a0"), outcome="banned", detail="account banned")
    assert profile.quarantined and profile.health_score == 0.0 and profile.bans == 1
    assert Alert.objects.get(kind="profile_quarantined", profile_id="eu-1").status == "open"
    assert Assignment.objects.get(pk=request.pk).status == S.EXPIRED
    assert Event.objects.filter(type="profile.quarantined", profile_id="eu-1").exists()
    assignment_release(assignment_id=held.assignment_id, actor=as_agent("a0"))
    with pytest.raises(ProfileQuarantined):
        assignment_create(profile_id="eu-1", agent_id="a1", actor=as_agent("a1"))
    with pytest.raises(ProfileQuarantined):
        assignment_take(agent_id="a1", actor=as_agent("a1"), profile_id="eu-1", wait_seconds=30)
    with pytest.raises(Forbidden):
        profile_quarantine_clear(profile_id="eu-1", actor=as_agent("a0"))
    cleared = profile_quarantine_clear(profile_id="eu-1", actor=OPERATOR, reason="new account")
    assert not cleared.quarantined and cleared.health_score == 1.0
    assert Alert.objects.get(kind="profile_quarantined", profile_id="eu-1").status == "resolved"
    assert assignment_create(profile_id="eu-1", agent_id="a1", actor=as_agent("a1")).status == S.ACTIVE


# --- Cooldown and quota --------------------------------------------------------------------------


def test_cooldown_refuses_explicit_takes_then_a_waiting_request_is_served_by_the_sweep(fleet):
    fleet.profile_cooldown_seconds = 30
    fleet.save(update_fields=["profile_cooldown_seconds"])
    a = assignment_create(profile_id="eu-1", agent_id="a0", actor=as_agent("a0"))
    assignment_release(assignment_id=a.assignment_id, actor=as_agent("a0"))
    with pytest.raises(ProfileCoolingDown) as exc:
        assignment_create(profile_id="eu-1", agent_id="a1", actor=as_agent("a1"))
    assert exc.value.code == "profile_cooling_down" and exc.value.details["retry_after"] >= 29
    request = assignment_take(agent_id="a1", actor=as_agent("a1"), profile_id="eu-1", wait_seconds=60)
    assert request.queued
    assert waits_sweep(actor=OPERATOR) == {"expired": 0, "handed_over": 0}  # still resting
    Profile.objects.filter(profile_id="eu-1").update(last_released_at=timezone.now() - timedelta(seconds=31))
    assert waits_sweep(actor=OPERATOR) == {"expired": 0, "handed_over": 1}
    assert Assignment.objects.get(pk=request.assignments[0].pk).status == S.ACTIVE


def test_a_release_with_cooldown_does_not_hand_over_at_once(fleet):
    fleet.profile_cooldown_seconds = 30
    fleet.save(update_fields=["profile_cooldown_seconds"])
    a = assignment_create(profile_id="eu-1", agent_id="a0", actor=as_agent("a0"))
    request = assignment_take(agent_id="a1", actor=as_agent("a1"), profile_id="eu-1", wait_seconds=60).assignments[0]
    assignment_release(assignment_id=a.assignment_id, actor=as_agent("a0"))
    assert Assignment.objects.get(pk=request.pk).status == S.PENDING


def test_daily_quota_counts_takes_per_utc_day(fleet):
    fleet.profile_daily_quota = 2
    fleet.save(update_fields=["profile_daily_quota"])
    for agent in ("a0", "a1"):
        a = assignment_create(profile_id="eu-1", agent_id=agent, actor=as_agent(agent))
        assignment_release(assignment_id=a.assignment_id, actor=as_agent(agent))
    with pytest.raises(QuotaExceeded) as exc:
        assignment_create(profile_id="eu-1", agent_id="a2", actor=as_agent("a2"))
    assert exc.value.details == {"profile_id": "eu-1", "quota": 2, "taken_today": 2}
    # Selection skips it; yesterday's count does not hold today.
    assert select("a2", {"tags": ["mobile"]}).assignments[0].profile.profile_id == "loose"
    Profile.objects.filter(profile_id="eu-1").update(quota_day=timezone.now().date() - timedelta(days=1))
    assert assignment_create(profile_id="eu-1", agent_id="a3", actor=as_agent("a3")).status == S.ACTIVE
    assert Profile.objects.get(profile_id="eu-1").quota_takes == 1


def test_selection_with_wait_waits_for_a_resting_profile_too(fleet):
    fleet.profile_cooldown_seconds = 30
    fleet.save(update_fields=["profile_cooldown_seconds"])
    a = select("a0", {"region": "us"}).assignments[0]
    assignment_release(assignment_id=a.assignment_id, actor=as_agent("a0"))
    with pytest.raises(NoProfileAvailable):
        select("a1", {"region": "us"})
    result = select("a1", {"region": "us"}, wait_seconds=60)
    assert result.queued and result.assignments[0].profile.profile_id == "us-1"
    Profile.objects.filter(profile_id="us-1").update(last_released_at=timezone.now() - timedelta(seconds=31))
    assert waits_sweep(actor=OPERATOR)["handed_over"] == 1
    assert Assignment.objects.get(pk=result.assignments[0].pk).status == S.ACTIVE
