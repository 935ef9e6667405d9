"""How profiles fare: outcome reports by their holders, the profile's `health_score`, and quarantine
(DESIGN.md, "Choosing a profile and keeping it healthy").

`health_score` is an exponentially weighted average of recent outcomes (success 1, captcha 0.5,
failure 0; each report weighs HEALTH_WEIGHT, so the last ten or so reports make most of it).
`banned` drops it to 0 and quarantines the profile: no take, selection or hand-over gives it out
until an operator clears it (`profile_quarantine_clear`: admin action, dashboard, API); the requests
queued for it expire at once (reason `profile quarantined`) rather than wait for nothing.
"""

from django.db.models import F
from django.utils import timezone

from assignments.alerts import ALERTS_ACTOR, alert_raise, alert_resolve
from assignments.events import event_record, recorded_transaction
from assignments.models import Alert, Assignment, Event, Profile
from assignments.waits import wait_expire
from config.actors import Actor, require_operator
from config.errors import Forbidden, NotFound
from config.locks import lock_one
from config.validation import clean_choice, clean_text

OUTCOMES = ("success", "failure", "captcha", "banned")
_VALUE = {"success": 1.0, "captcha": 0.5, "failure": 0.0, "banned": 0.0}
_COUNTER = {"success": "successes", "failure": "failures", "captcha": "captchas", "banned": "bans"}
HEALTH_WEIGHT = 0.2


def health_after(score: float, outcome: str) -> float:
    """The health score after one more report (pure)."""
    if outcome == "banned":
        return 0.0
    return round(min(1.0, max(0.0, (1 - HEALTH_WEIGHT) * score + HEALTH_WEIGHT * _VALUE[outcome])), 4)


def alert_key_profile_quarantined(profile_id: str) -> str:
    return f"{Alert.Kind.PROFILE_QUARANTINED}:{profile_id}"


def _lock_profile(profile_id: str) -> Profile:
    try:
        return lock_one(Profile, related=("pool",), profile_id=profile_id)
    except Profile.DoesNotExist:
        raise NotFound(f"profile {profile_id!r} does not exist", details={"profile_id": profile_id}) from None


def _require_reporter(profile: Profile, actor: Actor) -> None:
    """Operators, or the agent that holds the profile — or held it last, when nobody holds it since
    (a report usually follows the release)."""
    if actor.is_operator:
        return
    # Requests that waited and were never served keep their deadline (`wait_until`); served ones
    # and plain takes have none.
    last = (
        Assignment.objects.filter(profile=profile, wait_until__isnull=True)
        .exclude(status=Assignment.Status.PENDING)
        .select_related("agent").order_by("-assigned_at", "-pk").first()
    )
    holder = last.agent.agent_id if last is not None and last.agent_id else None
    if actor.is_agent and holder == actor.name:
        return
    raise Forbidden(
        f"{actor} neither holds profile {profile.profile_id!r} nor held it last, and may not report on it",
        details={"profile_id": profile.profile_id, "holder_agent_id": holder},
    )


def profile_report(*, profile_id: str, actor: Actor, outcome: str, detail: str = "") -> Profile:
    """A holder (or an operator) reports how the profile fared: counts it, moves `health_score`;
    `banned` quarantines the profile, raises a `profile_quarantined` alert and expires the requests
    queued for it. Emits `profile.reported`, and `profile.quarantined` when it quarantines."""
    outcome = clean_choice("outcome", outcome, OUTCOMES)
    detail = clean_text("detail", detail, max_length=500)
    now = timezone.now()
    queued = []
    with recorded_transaction():
        profile = _lock_profile(profile_id)
        _require_reporter(profile, actor)
        score = health_after(profile.health_score, outcome)
        counter = _COUNTER[outcome]
        update = {counter: F(counter) + 1, "health_score": score, "last_outcome_at": now}
        quarantine = outcome == "banned" and not profile.quarantined
        if quarantine:
            update |= {"quarantined": True, "quarantined_at": now,
                       "quarantine_reason": (detail or f"reported banned by {actor}")[:500]}
        Profile.objects.filter(pk=profile.pk).update(**update)
        profile.refresh_from_db(fields=[counter, "health_score", "last_outcome_at", "quarantined", "quarantined_at",
                                        "quarantine_reason"])
        event_record(Event.Type.PROFILE_REPORTED, actor=actor, profile=profile,
                     data={"outcome": outcome, "detail": detail, "health_score": profile.health_score})
        if quarantine:
            event_record(Event.Type.PROFILE_QUARANTINED, actor=actor, profile=profile,
                         data={"reason": profile.quarantine_reason})
            alert_raise(
                kind=Alert.Kind.PROFILE_QUARANTINED,
                severity=Alert.Severity.WARNING,
                actor=ALERTS_ACTOR,
                message=f"profile {profile.profile_id} was reported banned and is quarantined until an operator clears it",
                dedup_key=alert_key_profile_quarantined(profile.profile_id),
                pool=profile.pool.name if profile.pool_id else "",
                profile_id=profile.profile_id,
                data={"reported_by": str(actor), "detail": detail},
            )
            queued = list(Assignment.objects.queued().filter(profile=profile).values_list("assignment_id", flat=True))
    for assignment_id in queued:
        # Each in its own transaction (a row its agent is cancelling right now is skipped).
        wait_expire(assignment_id=assignment_id, actor=ALERTS_ACTOR, reason="profile quarantined")
    return profile


def profile_quarantine_clear(*, profile_id: str, actor: Actor, reason: str = "") -> Profile:
    """An operator clears a quarantined profile: it may be handed out again, with its health reset to
    1 (the operator vouches for it) and its `profile_quarantined` alert resolved. Clearing a profile
    that is not quarantined changes nothing. Emits `profile.quarantine_cleared`."""
    require_operator(actor, "clear a profile's quarantine")
    reason = clean_text("reason", reason, max_length=500)
    with recorded_transaction():
        profile = _lock_profile(profile_id)
        if not profile.quarantined:
            return profile
        was = profile.quarantine_reason
        profile.quarantined = False
        profile.quarantined_at = None
        profile.quarantine_reason = ""
        profile.health_score = 1.0
        profile.save(update_fields=["quarantined", "quarantined_at", "quarantine_reason", "health_score"])
        event_record(Event.Type.PROFILE_QUARANTINE_CLEARED, actor=actor, profile=profile,
                     data={"reason": reason, "quarantine_reason": was})
        alert_resolve(actor=actor, dedup_key=alert_key_profile_quarantined(profile.profile_id),
                      reason=reason or "quarantine cleared")
    return profile
