"""Every write to a Profile or an Assignment goes through here: one transaction each, with its
event rows (see `assignments.events`).

Lock order, kept by every service so that concurrent calls cannot deadlock:
pool move lock → agent rows (primary-key order) → profile rows → assignment rows → event lock.
"""

import logging
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone

from agents.models import Agent
from assignments.actors import Actor, require_operator, require_self_or_operator
from assignments.errors import (
    AgentAtCapacity,
    AgentUnavailable,
    Conflict,
    Forbidden,
    InvalidTransition,
    NotFound,
    PoolMismatch,
    ProfileDisabled,
    ProfileTaken,
    StaleFencingToken,
    ValidationFailed,
)
from assignments.events import event_record, recorded_transaction
from assignments.locking import lock_one
from assignments.models import Alert, Assignment, Event, Profile, assignment_can_transition
from assignments.validation import (
    clean_fields,
    clean_identifier,
    clean_json_object,
    clean_string_list,
    clean_text,
)
from config.jobs import older_than_pool_timeout
from pools.models import AgentPool

S = Assignment.Status
log = logging.getLogger(__name__)

# --- Profiles -------------------------------------------------------------------------------------


def _clean_profile_fields(fields: dict) -> dict:
    checks = {
        "name": lambda v: clean_text("name", v, max_length=200),
        "tags": lambda v: clean_string_list("tags", v),
        "region": lambda v: clean_text("region", v, max_length=64),
        "metadata": lambda v: clean_json_object("metadata", v),
        "enabled": _clean_bool,
        "pool": _clean_pool,
    }
    return clean_fields("profile", fields, checks)


def _clean_bool(value) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed("enabled must be true or false", details={"enabled": ["not a boolean"]})
    return value


def _clean_pool(value) -> AgentPool | None:
    if value is None or isinstance(value, AgentPool):
        return value
    if isinstance(value, str):
        pool = AgentPool.objects.filter(name=value).first()
        if pool is None:
            raise ValidationFailed(f"pool {value!r} does not exist", details={"pool": ["unknown pool"]})
        return pool
    raise ValidationFailed("pool must be a pool name", details={"pool": ["not a pool name"]})


def profile_create(*, profile_id: str, actor: Actor, **fields) -> Profile:
    """Add a profile (operators). Emits `profile.created`."""
    require_operator(actor, "create a profile")
    profile_id = clean_identifier("profile_id", profile_id)
    cleaned = _clean_profile_fields(fields)
    with recorded_transaction():
        profile = Profile(profile_id=profile_id, **cleaned)
        try:
            with transaction.atomic():
                profile.save(force_insert=True)
        except IntegrityError:
            raise Conflict(f"profile {profile_id!r} already exists", details={"profile_id": profile_id}) from None
        event_record(Event.Type.PROFILE_CREATED, actor=actor, profile=profile)
    return profile


def profile_update(*, profile_id: str, actor: Actor, **fields) -> Profile:
    """Change a profile (operators). Disabling it keeps a live assignment; it only refuses new ones.
    Emits `profile.updated` when something changed."""
    require_operator(actor, "edit a profile")
    cleaned = _clean_profile_fields(fields)
    with recorded_transaction():
        profile = _lock_profile(profile_id)
        changed = {k: v for k, v in cleaned.items() if getattr(profile, k) != v}
        if not changed:
            return profile
        for k, v in changed.items():
            setattr(profile, k, v)
        profile.save(update_fields=[*changed, "updated_at"])
        event_record(Event.Type.PROFILE_UPDATED, actor=actor, profile=profile, data={"fields": sorted(changed)})
    return profile


def _lock_profile(profile_id: str) -> Profile:
    try:
        return lock_one(Profile, related=("pool",), profile_id=profile_id)
    except Profile.DoesNotExist:
        raise NotFound(f"profile {profile_id!r} does not exist", details={"profile_id": profile_id}) from None


# --- Assignments ----------------------------------------------------------------------------------


def _live_holder(profile: Profile) -> Assignment | None:
    return (
        Assignment.objects.filter(profile=profile, status__in=Assignment.LIVE_STATUSES)
        .select_related("agent")
        .first()
    )


def _taken(profile_id: str, holder: Assignment | None, pool_name: str) -> ProfileTaken:
    details = {"profile_id": profile_id}
    if holder is not None:
        details.update(
            {
                "holder_agent_id": holder.agent.agent_id if holder.agent_id else None,
                "holder_assignment_id": str(holder.assignment_id),
                "holder_status": holder.status,
            }
        )
    return ProfileTaken(f"profile {profile_id!r} is already assigned", details=details, pool_name=pool_name)


def assignment_create(
    *,
    profile_id: str,
    agent_id: str,
    actor: Actor,
    workflow_id: str = "",
    metadata: dict | None = None,
    platform_resource_id: str = "",
) -> Assignment:
    """Give a free profile to an agent: a new `active` assignment with the profile's next fencing
    token. The agent must be active or busy, under its capacity, and in the profile's pool when the
    profile has one; the profile must be enabled and free.

    Emits `assignment.created`. A refused take because the profile is held emits
    `assignment.conflict` (in a transaction of its own, as the take itself is rolled back) and raises
    `Conflict` naming the holder.
    """
    require_self_or_operator(actor, agent_id, "take a profile")
    profile_id = clean_identifier("profile_id", profile_id)
    workflow_id = clean_text("workflow_id", workflow_id, max_length=200)
    metadata = clean_json_object("metadata", metadata)
    platform_resource_id = clean_text("platform_resource_id", platform_resource_id, max_length=255)
    try:
        try:
            return _assignment_create(
                profile_id=profile_id,
                agent_id=agent_id,
                actor=actor,
                workflow_id=workflow_id,
                metadata=metadata,
                platform_resource_id=platform_resource_id,
            )
        except IntegrityError as exc:
            # Only reachable if something took the profile without its row lock: the partial unique
            # constraint (invariant 1) still refuses it, and the whole take has rolled back. Caught
            # out here rather than in a savepoint around the insert: that would cost every take two
            # more round trips for a case the row lock already prevents.
            if "one_live_per_profile" not in str(exc) and "assignments_assignment.profile_id" not in str(exc):
                raise
            raise _taken(profile_id, None, "") from None
    except ProfileTaken as exc:
        with recorded_transaction():
            event_record(
                Event.Type.ASSIGNMENT_CONFLICT,
                actor=actor,
                profile_id=profile_id,
                agent_id=agent_id,
                pool_name=exc.pool_name,
                data={k: v for k, v in exc.details.items() if k != "profile_id"} | {"workflow_id": workflow_id},
            )
            _alert_if_conflict_burst(profile_id=profile_id, pool_name=exc.pool_name, actor=actor)
        raise


def _assignment_create(*, profile_id, agent_id, actor, workflow_id, metadata, platform_resource_id) -> Assignment:
    now = timezone.now()
    with recorded_transaction():
        # The agent row lock serialises this agent's takes, so its capacity count below holds.
        try:
            agent = lock_one(Agent, related=("pool",), agent_id=agent_id)
        except Agent.DoesNotExist:
            raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id}) from None
        if not agent.may_take:
            raise AgentUnavailable(
                f"agent {agent_id!r} is {agent.status} and may not take profiles",
                details={"agent_id": agent_id, "status": agent.status},
            )
        # The profile row lock serialises every take of this profile, across all web instances.
        profile = _lock_profile(profile_id)
        if not profile.enabled:
            raise ProfileDisabled(f"profile {profile_id!r} is disabled", details={"profile_id": profile_id})
        if profile.pool_id and profile.pool_id != agent.pool_id:
            raise PoolMismatch(
                f"profile {profile_id!r} belongs to pool {profile.pool.name!r}, agent {agent_id!r} to {agent.pool.name!r}",
                details={"profile_id": profile_id, "profile_pool": profile.pool.name, "agent_pool": agent.pool.name},
            )
        holder = _live_holder(profile)
        if holder is not None:
            raise _taken(profile_id, holder, agent.pool.name)
        live = Assignment.objects.filter(agent=agent, status__in=Assignment.LIVE_STATUSES).count()
        if live >= agent.capacity:
            raise AgentAtCapacity(
                f"agent {agent_id!r} already holds {live} of its {agent.capacity} assignments",
                details={"agent_id": agent_id, "live": live, "capacity": agent.capacity},
            )
        # Read-modify-write is safe: the profile row is locked until commit. Tokens only grow.
        profile.fencing_token += 1
        profile.save(update_fields=["fencing_token"])
        assignment = Assignment(
            profile=profile,
            pool=agent.pool,
            agent=agent,
            workflow_id=workflow_id,
            status=S.ACTIVE,
            assigned_at=now,
            last_activity=now,
            fencing_token=profile.fencing_token,
            platform_resource_id=platform_resource_id,
            metadata=metadata,
        )
        assignment.save(force_insert=True)
        event_record(
            Event.Type.ASSIGNMENT_CREATED,
            actor=actor,
            assignment=assignment,
            to_status=S.ACTIVE,
            data={"fencing_token": assignment.fencing_token, "workflow_id": workflow_id},
        )
    return assignment


def _lock_assignment(assignment_id) -> Assignment:
    try:
        assignment_id = UUID(str(assignment_id))
    except ValueError:
        raise NotFound(f"assignment {assignment_id!r} does not exist", details={"assignment_id": str(assignment_id)}) from None
    try:
        return lock_one(Assignment, related=("profile", "pool", "agent"), assignment_id=assignment_id)
    except Assignment.DoesNotExist:
        raise NotFound(
            f"assignment {assignment_id} does not exist", details={"assignment_id": str(assignment_id)}
        ) from None


def _check_fencing(assignment: Assignment, fencing_token) -> None:
    """Invariant 2: a caller that names a fencing token must name the current one."""
    if fencing_token is None:
        return
    if isinstance(fencing_token, bool) or not isinstance(fencing_token, int):
        raise ValidationFailed("fencing_token must be an integer", details={"fencing_token": ["not an integer"]})
    if fencing_token != assignment.fencing_token:
        raise StaleFencingToken(
            f"fencing token {fencing_token} is not the current one ({assignment.fencing_token})"
            + (": the profile has been reassigned since" if fencing_token < assignment.fencing_token else ""),
            details={
                "assignment_id": str(assignment.assignment_id),
                "fencing_token": fencing_token,
                "current_fencing_token": assignment.fencing_token,
            },
        )


def _require_holder_or_operator(assignment: Assignment, actor: Actor, action: str) -> None:
    if actor.is_operator:
        return
    holder = assignment.agent.agent_id if assignment.agent_id else None
    if actor.is_agent and holder == actor.name:
        return
    raise Forbidden(
        f"{actor} does not hold assignment {assignment.assignment_id} and may not {action} it",
        details={"assignment_id": str(assignment.assignment_id), "holder_agent_id": holder},
    )


def _transition(assignment: Assignment, to_status: str, *, actor: Actor, event_type: str, data=None, now=None, reason="") -> None:
    if not assignment_can_transition(assignment.status, to_status):
        raise InvalidTransition(
            f"assignment {assignment.assignment_id} cannot go from {assignment.status} to {to_status}",
            details={"assignment_id": str(assignment.assignment_id), "from_status": assignment.status, "to_status": to_status},
        )
    now = now or timezone.now()
    from_status = assignment.status
    assignment.status = to_status
    update = ["status", "last_activity"]
    assignment.last_activity = now
    if to_status in Assignment.TERMINAL_STATUSES:
        assignment.released_at = now
        assignment.release_reason = reason
        update += ["released_at", "release_reason"]
    assignment.save(update_fields=update)
    event_record(event_type, actor=actor, assignment=assignment, from_status=from_status, to_status=to_status, data=data)


def assignment_release(*, assignment_id, actor: Actor, fencing_token: int | None = None, reason: str | None = None) -> Assignment:
    """Release an assignment. Releasing an ended one again changes nothing and is not an error.

    - its holder (or a job) releases it: → `released`;
    - an operator releases one whose agent is alive: → `releasing` (the agent is told through its
      heartbeat and the event stream, and confirms by releasing or by no longer reporting it);
    - an operator releases one with no live agent (waiting, or the agent is stale or gone): → `released`.
    A given `fencing_token` must be current (409 `stale_fencing_token` otherwise).
    Emits `assignment.released`, or `assignment.status_changed` for → releasing.
    """
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id)
        _check_fencing(assignment, fencing_token)
        if assignment.status in Assignment.TERMINAL_STATUSES:
            return assignment
        _require_holder_or_operator(assignment, actor, "release")
        holder_is_actor = actor.is_agent and assignment.agent_id and assignment.agent.agent_id == actor.name
        # A draining agent is on its way out (drain releases what it was releasing, then makes it
        # inactive in the same transaction): nobody is left to confirm, so the release is final.
        agent_alive = assignment.agent_id is not None and assignment.agent.status not in (
            Agent.Status.STALE,
            Agent.Status.INACTIVE,
            Agent.Status.DRAINING,
        )
        if actor.kind == "user" and not holder_is_actor and agent_alive:
            if assignment.status == S.RELEASING:
                return assignment
            _transition(
                assignment, S.RELEASING, actor=actor, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
                data={"reason": Assignment.ReleaseReason.FORCE_RELEASED},
            )
            return assignment
        if reason is None:
            if holder_is_actor and assignment.status == S.RELEASING:
                reason = Assignment.ReleaseReason.FORCE_RELEASED  # the agent confirms an operator's release
            elif holder_is_actor:
                reason = Assignment.ReleaseReason.RELEASED
            elif assignment.agent_id is None:
                reason = Assignment.ReleaseReason.CANCELLED
            else:
                reason = Assignment.ReleaseReason.FORCE_RELEASED
        _transition(
            assignment, S.RELEASED, actor=actor, event_type=Event.Type.ASSIGNMENT_RELEASED,
            data={"release_reason": reason, "fencing_token": assignment.fencing_token}, reason=reason,
        )
        _rebalance_when_freed(assignment)
    return assignment


def _rebalance_when_freed(assignment: Assignment) -> None:
    """An assignment that ended freed room on its agent: after commit, give that room to the pool's
    waiting assignments — only when there are any (one indexed query), so a release stays cheap.
    Best-effort (`robust`): the release has committed; the rebalance job catches up otherwise."""
    if assignment.agent_id is None:
        return
    pool_id = assignment.pool_id

    def rebalance():
        if not Assignment.objects.filter(pool_id=pool_id, status=S.PENDING, agent__isnull=True).exists():
            return
        from pools.services import pool_rebalance

        pool = AgentPool.objects.filter(pk=pool_id).first()
        if pool is not None:
            pool_rebalance(pool=pool, actor=Actor.system("rebalance"))

    transaction.on_commit(rebalance, robust=True)


_UNSET = object()


def assignment_update(
    *,
    assignment_id,
    actor: Actor,
    status: str | None = None,
    metadata=_UNSET,
    platform_resource_id: str | None = None,
    fencing_token: int | None = None,
) -> Assignment:
    """The holder (or an operator) marks its assignment `active` or `idle`, replaces its metadata or
    records its platform resource (pod, container). Accepts active and idle assignments, and a
    pending one becoming active under its (new) agent. Any call by the holder renews its activity.
    Emits `assignment.status_changed` when the status changes, else `assignment.updated` when a
    field changes."""
    if status is not None and status not in (S.ACTIVE, S.IDLE):
        raise ValidationFailed("status must be active or idle", details={"status": [f"unknown value {str(status)[:50]!r}"]})
    if metadata is not _UNSET:
        metadata = clean_json_object("metadata", metadata)
    if platform_resource_id is not None:
        platform_resource_id = clean_text("platform_resource_id", platform_resource_id, max_length=255)
    now = timezone.now()
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id)
        _check_fencing(assignment, fencing_token)
        _require_holder_or_operator(assignment, actor, "update")
        if assignment.status not in (S.ACTIVE, S.IDLE):
            raise InvalidTransition(
                f"assignment {assignment.assignment_id} is {assignment.status}; only active or idle ones can be updated",
                details={"assignment_id": str(assignment.assignment_id), "status": assignment.status},
            )
        changed = []
        if metadata is not _UNSET and metadata != assignment.metadata:
            assignment.metadata = metadata
            changed.append("metadata")
        if platform_resource_id is not None and platform_resource_id != assignment.platform_resource_id:
            assignment.platform_resource_id = platform_resource_id
            changed.append("platform_resource_id")
        if changed:
            assignment.save(update_fields=changed)
        if status is not None and status != assignment.status:
            _transition(
                assignment, status, actor=actor, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
                data={"fields": changed} if changed else None, now=now,
            )
        elif changed:
            assignment.last_activity = now
            assignment.save(update_fields=["last_activity"])
            event_record(Event.Type.ASSIGNMENT_UPDATED, actor=actor, assignment=assignment, data={"fields": changed})
        elif actor.is_agent:
            assignment.last_activity = now
            assignment.save(update_fields=["last_activity"])
    return assignment


def assignment_expire(*, assignment_id, actor: Actor, reason: str = "idle timeout") -> Assignment:
    """End a live assignment nobody is using (the zombie reaper). Ended ones are left as they are.
    Emits `assignment.expired`."""
    require_operator(actor, "expire an assignment")
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id)
        if assignment.status in Assignment.TERMINAL_STATUSES:
            return assignment
        _transition(
            assignment, S.EXPIRED, actor=actor, event_type=Event.Type.ASSIGNMENT_EXPIRED,
            data={"reason": reason}, reason=Assignment.ReleaseReason.EXPIRED,
        )
        _rebalance_when_freed(assignment)
    return assignment


def assignment_fail(*, assignment_id, actor: Actor, error: str = "", fencing_token: int | None = None) -> Assignment:
    """The holder (or an operator) reports that the work on a live assignment failed (the browser
    crashed, the profile is broken). Ended ones are left as they are. Emits `assignment.status_changed`."""
    error = clean_text("error", error, max_length=1000)
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id)
        _check_fencing(assignment, fencing_token)
        if assignment.status in Assignment.TERMINAL_STATUSES:
            return assignment
        _require_holder_or_operator(assignment, actor, "fail")
        _transition(
            assignment, S.FAILED, actor=actor, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
            data={"error": error}, reason=Assignment.ReleaseReason.FAILED,
        )
        _rebalance_when_freed(assignment)
    return assignment


# --- Background jobs (run by config/jobs.py on the beat) -------------------------------------------


def _expiry_due(now):
    """The three kinds of assignment the expiry sweep ends or idles, as one filter each."""
    idle_cutoff = now - timedelta(seconds=settings.TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS)
    grace_cutoff = now - timedelta(seconds=settings.TETHER_RELEASE_GRACE_SECONDS)
    active = Assignment.objects.filter(status=S.ACTIVE, last_activity__lt=idle_cutoff)
    releasing = Assignment.objects.filter(status=S.RELEASING, last_activity__lt=grace_cutoff)
    idle = older_than_pool_timeout(
        Assignment.objects.filter(status=S.IDLE),
        since_field="last_activity",
        timeout_field="assignment_idle_timeout_seconds",
        now=now,
    )
    return {S.ACTIVE: active, S.IDLE: idle, S.RELEASING: releasing}


def assignments_expire_idle(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """The idle and expiry sweep (the zombie reaper), at most `limit` assignments per kind:
    - active with no activity for TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS → idle (`assignment_update`);
    - idle past its pool's `assignment_idle_timeout_seconds` (counted from when it went idle or was
      last reported) → expired (`assignment_expire`);
    - releasing whose agent has not confirmed within TETHER_RELEASE_GRACE_SECONDS → released
      (`assignment_release`, reason force_released).
    Each row is handled in its own transaction by the service that owns the change (its events).
    Idempotent; safe on several workers. Returns the counts."""
    require_operator(actor, "sweep assignments")
    now = now or timezone.now()
    due = _expiry_due(now)
    counts = {"idled": 0, "expired": 0, "released": 0}
    for status, queryset in due.items():
        # One indexed query per kind ((status, last_activity)); nothing to do costs only these.
        for pk in list(queryset.order_by("last_activity").values_list("pk", flat=True)[:limit]):
            with recorded_transaction():
                # SKIP LOCKED and the same condition again, under the row lock: a row another worker
                # is handling is skipped, and one that moved on since the query above (its agent
                # reported activity, someone released it) is left alone.
                row = (
                    queryset.select_for_update(of=("self",), skip_locked=True)
                    .filter(pk=pk)
                    .values_list("assignment_id", flat=True)
                    .first()
                )
                if row is None:
                    continue
                if status == S.ACTIVE:
                    assignment_update(assignment_id=row, actor=actor, status=S.IDLE)
                    counts["idled"] += 1
                elif status == S.IDLE:
                    assignment_expire(assignment_id=row, actor=actor, reason="idle timeout")
                    counts["expired"] += 1
                else:
                    assignment_release(
                        assignment_id=row, actor=actor, reason=Assignment.ReleaseReason.FORCE_RELEASED
                    )
                    counts["released"] += 1
    return counts


def _chunks(items, size):
    items = sorted(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def assignments_reconcile_cache(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Reconcile the cache of live assignments (assignments/cache.py) with the database, in chunks
    of `limit` keys: every profile and agent that holds something, and every key the cache has.
    - `missing`: a live assignment the cache does not have (lost while Redis was down) → stored;
    - `stale`: the cache says another holder, status or token, or a holder for a free profile →
      replaced by the truth.
    Runs alone (advisory lock JOB_RECONCILE_CACHE; a second worker returns `busy`); does nothing
    while the cache is unreachable. Idempotent: a second run finds no drift. Returns the counts."""
    from assignments import cache as live_cache
    from config import locks

    require_operator(actor, "reconcile the cache")
    if not live_cache.cache_reachable():
        return {"cache_unavailable": True, "missing": 0, "stale": 0, "checked": 0}
    counts = {"checked": 0, "missing": 0, "stale": 0}
    with transaction.atomic():
        if not locks.try_xact_lock(locks.JOB_RECONCILE_CACHE):
            return {"busy": True} | counts
        live = Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES)
        profile_ids = set(live.values_list("profile__profile_id", flat=True))
        profile_ids |= {k[len(live_cache.PROFILE_PREFIX):] for k in live_cache.cached_keys(live_cache.PROFILE_PREFIX)}
        agent_ids = set(live.filter(agent__isnull=False).values_list("agent__agent_id", flat=True))
        agent_ids |= {k[len(live_cache.AGENT_PREFIX):] for k in live_cache.cached_keys(live_cache.AGENT_PREFIX)}
        for ids, key_of, truth_of in (
            (profile_ids, live_cache.profile_key, live_cache.truth_for_profiles),
            (agent_ids, live_cache.agent_key, live_cache.truth_for_agents),
        ):
            for chunk in _chunks(ids, limit):
                # Deliberately not atomic with the commits it races: a change committed between the
                # truth's read and the write below can be overwritten by the older truth; its own
                # after-commit refresh usually lands later, and the next run repairs it otherwise.
                cached = live_cache.cache.get_many([key_of(i) for i in chunk])
                truth = truth_of(chunk)
                counts["checked"] += len(truth)
                repairs = {}
                for key, want in truth.items():
                    have = cached.get(key)
                    if not isinstance(have, dict) or "a" not in have:
                        if want["a"] not in (None, []):
                            counts["missing"] += 1
                            repairs[key] = want
                    elif not _same_entry(have["a"], want["a"], live_cache):
                        counts["stale"] += 1
                        repairs[key] = want
                if repairs:
                    live_cache.cache.set_many(repairs, timeout=settings.TETHER_ASSIGNMENT_CACHE_SECONDS)
    return counts


def _same_entry(have, want, live_cache) -> bool:
    if isinstance(want, list) or isinstance(have, list):
        if not (isinstance(want, list) and isinstance(have, list)) or len(have) != len(want):
            return False
        by_id = {item.get("assignment_id"): item for item in have if isinstance(item, dict)}
        return all(live_cache.same(by_id.get(item["assignment_id"]), item) for item in want)
    return live_cache.same(have, want)


def _hour_floor(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def _rollup_hour(start, now) -> list:
    """Usage rows (UsageRollup, unsaved) of the hour starting at `start`, from the assignments held
    during it (split between agents by their reassignments) and the events that happened in it."""
    from collections import defaultdict

    from assignments.models import UsageRollup

    end = start + timedelta(hours=1)
    Scope = UsageRollup.Scope
    stats = defaultdict(lambda: {"assignments": 0, "busy_seconds": 0.0, "conflicts": 0, "failures": 0, "expirations": 0})

    rows = list(
        Assignment.objects.filter(assigned_at__lt=end)
        .exclude(released_at__lte=start)
        .values_list("assignment_id", "profile__profile_id", "pool__name", "agent__agent_id", "assigned_at", "released_at")
    )
    # Failover and rebalancing move an assignment between agents (or leave it waiting, held by
    # nobody): its `assignment.reassigned` events split its time between the agents that held it.
    moves = defaultdict(list)
    ids = [row[0] for row in rows]
    for offset in range(0, len(ids), 500):
        for assignment_id, at, from_agent, to_agent in (
            Event.objects.filter(type=Event.Type.ASSIGNMENT_REASSIGNED, assignment_id__in=ids[offset:offset + 500])
            .order_by("seq")
            .values_list("assignment_id", "occurred_at", "data__from_agent_id", "data__to_agent_id")
        ):
            moves[assignment_id].append((at, from_agent, to_agent))
    for assignment_id, profile_id, pool_name, agent_id, assigned_at, released_at in rows:
        history = moves.get(assignment_id, [])
        holder, since = (history[0][1] if history else agent_id), assigned_at
        spans = []
        for at, _from_agent, to_agent in history:
            spans.append((holder, since, at))
            holder, since = to_agent, at
        spans.append((holder, since, min(released_at or now, now)))
        for holder, held_from, held_to in spans:
            busy = (min(held_to, end) - max(held_from, start)).total_seconds()
            if holder is None or busy <= 0:
                continue  # waiting for an agent is not busy time
            for scope, key in ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, holder)):
                stats[(scope, key)]["busy_seconds"] += busy

    counted = (
        Event.objects.filter(occurred_at__gte=start, occurred_at__lt=end, type__in=[
            Event.Type.ASSIGNMENT_CREATED, Event.Type.ASSIGNMENT_REASSIGNED, Event.Type.ASSIGNMENT_CONFLICT,
            Event.Type.ASSIGNMENT_EXPIRED, Event.Type.ASSIGNMENT_STATUS_CHANGED,
        ])
        .values_list("type", "to_status", "profile_id", "agent_id", "pool")
        .annotate(n=models.Count("seq"))
        .order_by()
    )
    for type_, to_status, profile_id, agent_id, pool_name, n in counted:
        if type_ == Event.Type.ASSIGNMENT_CREATED:
            what, scopes = "assignments", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif type_ == Event.Type.ASSIGNMENT_REASSIGNED:
            if to_status != S.ACTIVE:
                continue
            what, scopes = "assignments", ((Scope.AGENT, agent_id),)  # handed to it by failover or rebalancing
        elif type_ == Event.Type.ASSIGNMENT_CONFLICT:
            what, scopes = "conflicts", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif type_ == Event.Type.ASSIGNMENT_EXPIRED:
            what, scopes = "expirations", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        elif to_status == S.FAILED:
            what, scopes = "failures", ((Scope.PROFILE, profile_id), (Scope.POOL, pool_name), (Scope.AGENT, agent_id))
        else:
            continue
        for scope, key in scopes:
            if key:
                stats[(scope, key)][what] += n

    return [
        UsageRollup(hour=start, scope=scope, key=key, computed_at=now,
                    **(values | {"busy_seconds": round(values["busy_seconds"], 3)}))
        for (scope, key), values in stats.items()
    ]


def usage_rollup_recent(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Roll up usage per hour and per profile, agent and pool (assignments, busy seconds, conflicts,
    failures, expirations) for the current hour and the TETHER_ROLLUP_HOURS_BACK before it. Each
    covered hour's rows are replaced, so running twice gives the same rows. Runs alone (advisory lock
    JOB_ROLLUP; a second worker returns `busy`). Returns the counts."""
    from assignments.models import UsageRollup
    from config import locks

    require_operator(actor, "roll up usage")
    now = now or timezone.now()
    current = _hour_floor(now)
    hours = [current - timedelta(hours=i) for i in range(settings.TETHER_ROLLUP_HOURS_BACK, -1, -1)]
    written = 0
    with transaction.atomic():
        if not locks.try_xact_lock(locks.JOB_ROLLUP):
            return {"busy": True, "hours": 0, "rows": 0}
        for hour in hours:
            rows = _rollup_hour(hour, now)
            UsageRollup.objects.filter(hour=hour).delete()
            UsageRollup.objects.bulk_create(rows, batch_size=1000)
            written += len(rows)
    return {"hours": len(hours), "rows": written}


_ARCHIVE_BATCHES_PER_RUN = 10


def events_archive_old(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Move events older than TETHER_EVENT_RETENTION_DAYS from the event log to EventArchive (same
    seq and columns): oldest first, `limit` per transaction, at most 10 transactions a run. The log
    is append-only for everyone else (`Event.delete()` refuses); this bulk move is the one sanctioned
    removal, and nothing is dropped — each batch is inserted into the archive in the same transaction
    that deletes it. Runs alone (advisory lock JOB_ARCHIVE). Idempotent. Returns the counts."""
    from assignments.models import EventArchive
    from config import locks

    require_operator(actor, "archive events")
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.TETHER_EVENT_RETENTION_DAYS)
    columns = [f.attname for f in EventArchive._meta.concrete_fields if f.attname != "archived_at"]
    archived = 0
    for _ in range(_ARCHIVE_BATCHES_PER_RUN):
        with transaction.atomic():
            if not locks.try_xact_lock(locks.JOB_ARCHIVE):
                return {"busy": True, "archived": archived}
            batch = list(Event.objects.filter(occurred_at__lt=cutoff).order_by("seq").values(*columns)[:limit])
            if not batch:
                break
            EventArchive.objects.bulk_create(
                [EventArchive(archived_at=now, **row) for row in batch], ignore_conflicts=True
            )
            # A queryset delete: one DELETE of exactly the rows just copied (Event.delete() refuses
            # single rows by design; this is the archive's sanctioned bulk move).
            Event.objects.filter(seq__in=[row["seq"] for row in batch]).delete()
            archived += len(batch)
        if len(batch) < limit:
            break
    return {"archived": archived}


# --- Alerts ---------------------------------------------------------------------------------------

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


def _alert_if_conflict_burst(*, profile_id: str, pool_name: str, actor: Actor) -> None:
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
