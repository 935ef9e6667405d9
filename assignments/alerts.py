"""Alerts: conditions an operator must act on. Raised and resolved by the services whose change
started or ended the condition (inside their transaction), acknowledged and resolved by operators.
Every status change asks the one table `ALERT_TRANSITIONS` and records its `alert.*` event."""

from datetime import timedelta
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from assignments.events import event_record, recorded_transaction
from assignments.models import ALERT_TRANSITIONS, Alert, Event
from config.actors import Actor, require_operator
from config.errors import Conflict, NotFound, ValidationFailed
from config.validation import clean_text

# A refused take is already an `assignment.conflict` event. One refusal is normal (two workflows
# asked for the same profile, one waits); this many refusals of ONE profile within the window means
# something keeps fighting over it (a retry loop, two schedulers owning the same profile), which an
# operator should look at: then, and only then, a `conflict_burst` alert is raised.
CONFLICT_BURST_COUNT = 5
CONFLICT_BURST_WINDOW_SECONDS = 60
# Alerts raised and resolved automatically, as a consequence of another change, name this actor.
ALERTS_ACTOR = Actor.system("alerts")


def _alert_event(event_type: str, alert: Alert, *, actor: Actor, from_status: str = "", data: dict | None = None) -> None:
    event_record(
        event_type,
        actor=actor,
        pool_name=alert.pool,
        agent_id=alert.agent_id,
        profile_id=alert.profile_id,
        from_status=from_status,
        to_status=alert.status,
        data={
            "alert_id": str(alert.alert_id),
            "kind": alert.kind,
            "severity": alert.severity,
            "message": alert.message,
            "assignment_id": str(alert.assignment_id) if alert.assignment_id else None,
        }
        | (data or {}),
    )


def alert_raise(
    *,
    kind: str,
    actor: Actor,
    message: str,
    severity: str = Alert.Severity.WARNING,
    dedup_key: str | None = None,
    pool: str = "",
    agent_id: str = "",
    profile_id: str = "",
    assignment_id=None,
    data: dict | None = None,
) -> tuple[Alert, bool]:
    """Raise an alert for a condition operators must act on, unless that condition (`dedup_key`,
    by default `kind:pool:agent_id:profile_id`) already has an unresolved one: then that alert only
    counts one more occurrence. Called by services inside their own transaction (it joins it).
    Returns `(alert, raised)`. Emits `alert.raised` for a new alert only.
    Lock order: after the rows of the change that raised it (alert rows come last, before events)."""
    require_operator(actor, "raise an alert")
    if kind not in Alert.Kind.values:
        raise ValidationFailed(f"unknown alert kind {str(kind)[:50]!r}", details={"kind": ["unknown value"]})
    if severity not in Alert.Severity.values:
        raise ValidationFailed(f"unknown severity {str(severity)[:50]!r}", details={"severity": ["unknown value"]})
    dedup_key = dedup_key or f"{kind}:{pool}:{agent_id}:{profile_id}"
    now = timezone.now()
    with recorded_transaction():
        for _attempt in range(2):
            existing = (
                Alert.objects.select_for_update()
                .filter(dedup_key=dedup_key, status__in=Alert.UNRESOLVED_STATUSES)
                .first()
            )
            if existing is not None:
                Alert.objects.filter(pk=existing.pk).update(occurrences=F("occurrences") + 1, last_raised_at=now)
                existing.refresh_from_db(fields=["occurrences", "last_raised_at"])
                return existing, False
            alert = Alert(
                kind=kind, severity=severity, message=clean_text("message", message, max_length=500),
                dedup_key=dedup_key[:300], pool=pool, agent_id=agent_id, profile_id=profile_id,
                assignment_id=assignment_id, data=data or {}, raised_at=now, last_raised_at=now,
            )
            try:
                # The partial unique constraint settles a concurrent raise of the same condition:
                # the loser finds the winner's alert on its second pass.
                with transaction.atomic():
                    alert.save(force_insert=True)
            except IntegrityError:
                continue
            _alert_event(Event.Type.ALERT_RAISED, alert, actor=actor, data=data)
            return alert, True
    raise Conflict("the alert could not be raised, try again", details={"dedup_key": dedup_key})


def _check(alert: Alert, to_status: str) -> None:
    ALERT_TRANSITIONS.check(alert.status, to_status, subject=str(alert.alert_id), details={"alert_id": str(alert.alert_id)})


def _lock_alert(alert_id) -> Alert:
    try:
        alert_id = UUID(str(alert_id))
        return Alert.objects.select_for_update().get(alert_id=alert_id)
    except (ValueError, Alert.DoesNotExist):
        raise NotFound(f"alert {alert_id!r} does not exist", details={"alert_id": str(alert_id)}) from None


def alert_acknowledge(*, alert_id, actor: Actor) -> Alert:
    """An operator says they are on it: open → acknowledged (it stays unresolved, so the same
    condition still does not raise a second alert). Acknowledging an acknowledged or resolved alert
    changes nothing. Emits `alert.acknowledged`."""
    require_operator(actor, "acknowledge an alert")
    with recorded_transaction():
        alert = _lock_alert(alert_id)
        if alert.status != Alert.Status.OPEN:
            return alert
        _check(alert, Alert.Status.ACKNOWLEDGED)
        alert.status = Alert.Status.ACKNOWLEDGED
        alert.acknowledged_by = str(actor)
        alert.acknowledged_at = timezone.now()
        alert.save(update_fields=["status", "acknowledged_by", "acknowledged_at"])
        _alert_event(Event.Type.ALERT_ACKNOWLEDGED, alert, actor=actor, from_status=Alert.Status.OPEN)
    return alert


def alert_resolve(*, actor: Actor, alert_id=None, dedup_key: str | None = None, reason: str = "") -> Alert | None:
    """The condition is over: an operator resolves an alert by `alert_id`, or a service whose
    condition cleared resolves it by `dedup_key` (nothing to do when none is unresolved: returns None).
    Resolving a resolved alert changes nothing. Emits `alert.resolved`."""
    require_operator(actor, "resolve an alert")
    if (alert_id is None) == (dedup_key is None):
        raise ValidationFailed("give alert_id or dedup_key", details={"alert_id": ["give exactly one of alert_id, dedup_key"]})
    reason = clean_text("reason", reason, max_length=500)
    with recorded_transaction():
        if alert_id is not None:
            alert = _lock_alert(alert_id)
        else:
            alert = (
                Alert.objects.select_for_update()
                .filter(dedup_key=dedup_key, status__in=Alert.UNRESOLVED_STATUSES)
                .first()
            )
            if alert is None:
                return None
        if alert.status == Alert.Status.RESOLVED:
            return alert
        from_status = alert.status
        _check(alert, Alert.Status.RESOLVED)
        alert.status = Alert.Status.RESOLVED
        alert.resolved_by = str(actor)
        alert.resolved_at = timezone.now()
        alert.save(update_fields=["status", "resolved_by", "resolved_at"])
        _alert_event(Event.Type.ALERT_RESOLVED, alert, actor=actor, from_status=from_status,
                     data={"reason": reason} if reason else None)
    return alert


def alert_key_pool_no_healthy_agent(pool_name: str) -> str:
    return f"{Alert.Kind.POOL_NO_HEALTHY_AGENT}:{pool_name}"


def alert_key_agent_stale(agent_id: str) -> str:
    return f"{Alert.Kind.AGENT_STALE}:{agent_id}"


def alert_key_conflict_burst(profile_id: str) -> str:
    return f"{Alert.Kind.CONFLICT_BURST}:{profile_id}"


def alert_if_conflict_burst(*, profile_id: str, pool_name: str, actor: Actor) -> None:
    """Called in the transaction that records a refused take (see CONFLICT_BURST_COUNT)."""
    since = timezone.now() - timedelta(seconds=CONFLICT_BURST_WINDOW_SECONDS)
    recent = Event.objects.filter(
        profile_id=profile_id, type=Event.Type.ASSIGNMENT_CONFLICT, occurred_at__gte=since
    ).count()
    # This refusal's own event row is still in the buffer (written at commit), hence the + 1.
    if recent + 1 >= CONFLICT_BURST_COUNT:
        alert_raise(
            kind=Alert.Kind.CONFLICT_BURST,
            severity=Alert.Severity.WARNING,
            actor=ALERTS_ACTOR,
            message=f"{recent + 1} refused takes of profile {profile_id} in the last {CONFLICT_BURST_WINDOW_SECONDS} s",
            dedup_key=alert_key_conflict_burst(profile_id),
            pool=pool_name,
            profile_id=profile_id,
            data={"conflicts": recent + 1, "window_seconds": CONFLICT_BURST_WINDOW_SECONDS},
        )
