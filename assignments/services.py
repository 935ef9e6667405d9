"""Every write to a Profile or an Assignment goes through here: one transaction each, with its
event rows (see `assignments.events`), each status change checked against `ASSIGNMENT_TRANSITIONS`.

Lock order (config/locks.py): pool move lock → agent rows → profile rows → assignment rows → alert
rows → event lock.
"""

import logging
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agents.models import Agent
from assignments.alerts import alert_if_conflict_burst
from assignments.events import event_record, recorded_transaction
from assignments.guardrails import profile_count_take, profile_refusal
from assignments.models import ASSIGNMENT_TRANSITIONS, Assignment, Event, Profile
from assignments.waits import frees_profile, waits_profile_freed
from config.actors import Actor, require_operator, require_self_or_operator
from config.errors import (
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
from config.locks import lock_one, lock_one_named
from config.sql import from_row, sql_insert, sql_update, sql_update_statement
from config.validation import (
    clean_fields,
    clean_identifier,
    clean_json_object,
    clean_string_list,
    clean_text,
)
from pools.models import AgentPool

S = Assignment.Status
log = logging.getLogger(__name__)

# --- Profiles -------------------------------------------------------------------------------------


def profile_clean_fields(fields: dict) -> dict:
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
    cleaned = profile_clean_fields(fields)
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
    cleaned = profile_clean_fields(fields)
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


def _lock_profile(profile_id: str, *, only: tuple[str, ...] = ()) -> Profile:
    try:
        if only:  # a hot path naming its columns: the statement built once
            return lock_one_named(Profile, related="pool", only=only, profile_id=profile_id)
        return lock_one(Profile, related=("pool",), only=only, profile_id=profile_id)
    except Profile.DoesNotExist:
        raise NotFound(f"profile {profile_id!r} does not exist", details={"profile_id": profile_id}) from None


# --- Assignments ----------------------------------------------------------------------------------


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


# What a take reads of the rows it locks (the rest of them is never touched on this path).
_TAKING_AGENT = (
    "agent_id", "status", "capacity", "pool__name", "pool__profile_cooldown_seconds", "pool__profile_daily_quota",
)
_TAKEN_PROFILE = (
    "profile_id", "enabled", "fencing_token", "region", "pool__name",
    # assignments/guardrails.py: quarantine, cooldown, daily quota
    "quarantined", "quarantine_reason", "last_released_at", "quota_day", "quota_takes",
)

# Run by a take once it holds the agent's and the profile's row locks (so both answers are current
# and stay so until commit): how many live assignments the agent holds (queued requests included),
# and the profile's holder if any (`holding_q`: held by an agent, or the pool's session waiting for
# one; a request queued for the profile is not its holder) — one round trip instead of two ORM
# queries.
TAKE_CHECK_SQL = """
SELECT (SELECT count(*) FROM assignments_assignment
        WHERE agent_id = %s AND status IN ('pending', 'active', 'idle', 'releasing')),
       h.assignment_id, h.status, ag.agent_id
FROM (SELECT 1 AS one) AS one
LEFT JOIN assignments_assignment h
       ON h.profile_id = %s
      AND (h.status IN ('active', 'idle', 'releasing') OR (h.status = 'pending' AND h.agent_id IS NULL))
LEFT JOIN agents_agent ag ON ag.id = h.agent_id
"""


def _live_count_and_holder(*, agent: Agent, profile: Profile, update: list[str] | None = None) -> tuple[int, dict | None]:
    """The agent's live assignments and the profile's holder, read under the profile's row lock
    (taken by an earlier statement, so this one's snapshot sees every take committed before it).
    With `update`, the same statement writes those fields of the locked profile (a data-modifying
    CTE, run on the same snapshot: one round trip for the take's check and its fencing-token bump;
    a take refused below rolls the write back with its transaction)."""
    sql, params = TAKE_CHECK_SQL, [agent.pk, profile.pk]
    if update and connection.vendor == "postgresql":
        update_sql, update_params = sql_update_statement(profile, update)
        sql, params = f"WITH bump AS ({update_sql}) {sql}", [*update_params, *params]
    elif update:
        sql_update(profile, update)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        live, holder_id, holder_status, holder_agent_id = cursor.fetchone()
    if holder_id is None:
        return live, None
    return live, {
        "holder_agent_id": holder_agent_id,
        "holder_assignment_id": str(UUID(str(holder_id))),
        "holder_status": holder_status,
    }


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
            alert_if_conflict_burst(profile_id=profile_id, pool_name=exc.pool_name, actor=actor)
        raise


def _assignment_create(*, profile_id, agent_id, actor, workflow_id, metadata, platform_resource_id) -> Assignment:
    with recorded_transaction():
        # The agent row lock serialises this agent's takes, so its capacity count below holds.
        try:
            agent = lock_one_named(Agent, related="pool", only=_TAKING_AGENT, agent_id=agent_id)
        except Agent.DoesNotExist:
            raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id}) from None
        if not agent.may_take:
            raise AgentUnavailable(
                f"agent {agent_id!r} is {agent.status} and may not take profiles",
                details={"agent_id": agent_id, "status": agent.status},
            )
        # The profile row lock serialises every take of this profile, across all web instances.
        profile = _lock_profile(profile_id, only=_TAKEN_PROFILE)
        # Read under the profile's row lock: a clock read before the lock wait would date this
        # assignment before the previous holder's release, and one profile's intervals would overlap.
        now = timezone.now()
        if not profile.enabled:
            raise ProfileDisabled(f"profile {profile_id!r} is disabled", details={"profile_id": profile_id})
        if profile.pool_id and profile.pool_id != agent.pool_id:
            raise PoolMismatch(
                f"profile {profile_id!r} belongs to pool {profile.pool.name!r}, agent {agent_id!r} to {agent.pool.name!r}",
                details={"profile_id": profile_id, "profile_pool": profile.pool.name, "agent_pool": agent.pool.name},
            )
        # Quarantine, the pool's cooldown and daily quota (assignments/guardrails.py), judged on the
        # profile as locked — before the bump below counts this take — and raised after the holder's
        # refusal, whose answer names who holds it.
        refusal = profile_refusal(profile, agent.pool, now)
        # Read-modify-write is safe: the profile row is locked until commit. Tokens only grow. The
        # bump is written with the check (one statement); any refusal below rolls it back.
        profile.fencing_token += 1
        live, holder = _live_count_and_holder(
            agent=agent, profile=profile, update=["fencing_token", *profile_count_take(profile, now)])
        if holder is not None:
            raise ProfileTaken(f"profile {profile_id!r} is already assigned", details={"profile_id": profile_id, **holder},
                               pool_name=agent.pool.name)
        if refusal is not None:
            raise refusal
        # (`live` counts queued requests too: they become held assignments without another check.)
        if live >= agent.capacity:
            raise AgentAtCapacity(
                f"agent {agent_id!r} already holds {live} of its {agent.capacity} assignments",
                details={"agent_id": agent_id, "live": live, "capacity": agent.capacity},
            )
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
        sql_insert(assignment)
        event_record(
            Event.Type.ASSIGNMENT_CREATED,
            actor=actor,
            assignment=assignment,
            to_status=S.ACTIVE,
            data={"fencing_token": assignment.fencing_token, "workflow_id": workflow_id},
        )
    return assignment


# What the writes on one assignment and their replies use: the assignment itself, and of its related
# rows only their ids and the holder's status (the release's row lock read 60+ columns of 4 tables).
_LOCKED_ASSIGNMENT = (
    *(f.name for f in Assignment._meta.concrete_fields),
    "profile__profile_id", "pool__name", "agent__agent_id", "agent__status",
)
_ASSIGNMENT_COLUMNS = Assignment._meta.concrete_fields
# The same read as one named statement on PostgreSQL (every release runs it, and compiling the ORM's
# version cost more than running it): locks the assignment row (OF a), and for a release its
# profile's too (OF a, p: the order every release already took them in, the profile's row coming
# later with the update of `last_released_at`), so that the release's next statements see, in their
# snapshots, every request queued for the profile before this lock (`waits_profile_freed` then asks
# for the queue with the update: one round trip less on the hot path). Never the pool's or agent's.
# `ag.id` comes back so that a join made stale by the lock wait can be told (see lock_one).
_ASSIGNMENT_LOCK_SELECT = f"""
SELECT {", ".join("a." + f.column for f in _ASSIGNMENT_COLUMNS)},
       p.profile_id, pl.name, ag.id, ag.agent_id, ag.status
FROM assignments_assignment a
JOIN assignments_profile p ON p.id = a.profile_id
JOIN pools_agentpool pl ON pl.id = a.pool_id
LEFT JOIN agents_agent ag ON ag.id = a.agent_id
WHERE a.assignment_id = %s
"""
ASSIGNMENT_LOCK_SQL = _ASSIGNMENT_LOCK_SELECT + "FOR UPDATE OF a\n"
ASSIGNMENT_AND_PROFILE_LOCK_SQL = _ASSIGNMENT_LOCK_SELECT + "FOR UPDATE OF a, p\n"


def _lock_assignment_named(assignment_id: UUID, *, with_profile: bool = False) -> Assignment | None:
    """The assignment, locked (with its profile's row when `with_profile`), with its profile, pool
    and agent (ids, name, status; the rest deferred), by ASSIGNMENT_LOCK_SQL; None when the row is
    missing or the join came back stale, for `lock_one` to sort out (the row lock, if any, is held by
    then)."""
    with connection.cursor() as cursor:
        cursor.execute(ASSIGNMENT_AND_PROFILE_LOCK_SQL if with_profile else ASSIGNMENT_LOCK_SQL, [assignment_id])
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(_ASSIGNMENT_COLUMNS)
    profile_id, pool_name, agent_pk, agent_id, agent_status = row[n:]
    assignment = from_row(Assignment, _ASSIGNMENT_COLUMNS, row[:n], using=connection.alias)
    if assignment.agent_id != agent_pk:
        return None  # the agent join is from before the lock wait: read again
    assignment.profile = Profile.from_db(connection.alias, ["id", "profile_id"], [assignment.profile_id, profile_id])
    # Read by `waits_profile_freed`: this transaction holds the profile's row lock already.
    assignment.profile_row_locked = with_profile
    assignment.pool = AgentPool.from_db(connection.alias, ["id", "name"], [assignment.pool_id, pool_name])
    if agent_pk is not None:
        assignment.agent = Agent.from_db(connection.alias, ["id", "agent_id", "status"], [agent_pk, agent_id, agent_status])
    return assignment


def _lock_assignment(assignment_id, *, with_profile: bool = False) -> Assignment:
    try:
        assignment_id = UUID(str(assignment_id))
    except ValueError:
        raise NotFound(f"assignment {assignment_id!r} does not exist", details={"assignment_id": str(assignment_id)}) from None
    if connection.vendor == "postgresql":
        assignment = _lock_assignment_named(assignment_id, with_profile=with_profile)
        if assignment is not None:
            return assignment
    try:
        return lock_one(Assignment, related=("profile", "pool", "agent"), only=_LOCKED_ASSIGNMENT, assignment_id=assignment_id)
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


def assignment_check_transition(assignment: Assignment, to_status: str) -> None:
    """The one gate of the assignment state machine: every write that changes an assignment's status
    (or moves it to another agent) asks here first."""
    ASSIGNMENT_TRANSITIONS.check(
        assignment.status, to_status, subject=str(assignment.assignment_id),
        details={"assignment_id": str(assignment.assignment_id)},
    )


def _transition(
    assignment: Assignment, to_status: str, *, actor: Actor, event_type: str, data=None, now=None, reason="",
    activity: bool = True,
) -> None:
    """`activity=False`: the change is no sign of life from the holder, so `last_activity` (from
    which the pool's idle timeout counts) stays as it is."""
    assignment_check_transition(assignment, to_status)
    now = now or timezone.now()
    from_status = assignment.status
    assignment.status = to_status
    update = ["status"]
    if activity:
        assignment.last_activity = now
        update.append("last_activity")
    if to_status in Assignment.TERMINAL_STATUSES:
        assignment.released_at = now
        assignment.release_reason = reason
        update += ["released_at", "release_reason"]
    sql_update(assignment, update)
    event_record(event_type, actor=actor, assignment=assignment, from_status=from_status, to_status=to_status, data=data)
    if frees_profile(from_status, to_status, assignment):
        # The profile is free: the next queued request gets it in this same transaction.
        waits_profile_freed(assignment=assignment, actor=actor, now=now)


def assignment_release(*, assignment_id, actor: Actor, fencing_token: int | None = None, reason: str | None = None) -> Assignment:
    """Release an assignment. Its holder (or an operator) releasing an ended one again changes
    nothing and is not an error; anyone else is refused (403), ended or not.

    - its holder (or a job) releases it: → `released`;
    - an operator releases one whose agent is alive: → `releasing` (the agent is told through its
      heartbeat and the event stream, and confirms by releasing or by no longer reporting it);
    - an operator releases one with no live agent (waiting, or the agent is stale or gone): → `released`.
    A given `fencing_token` must be current (409 `stale_fencing_token` otherwise).
    Emits `assignment.released`, or `assignment.status_changed` for → releasing.
    """
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id, with_profile=True)
        _check_fencing(assignment, fencing_token)
        # Who may comes first: an ended assignment is still no one else's to release.
        _require_holder_or_operator(assignment, actor, "release")
        if assignment.status in Assignment.TERMINAL_STATUSES:
            return assignment
        holder_is_actor = actor.is_agent and assignment.agent_id and assignment.agent.agent_id == actor.name
        # A draining agent is on its way out (drain releases what it was releasing, then makes it
        # inactive in the same transaction): nobody is left to confirm, so the release is final.
        agent_alive = assignment.agent_id is not None and assignment.agent.status not in (
            Agent.Status.STALE,
            Agent.Status.INACTIVE,
            Agent.Status.DRAINING,
        )
        if actor.kind == "user" and not holder_is_actor and agent_alive and assignment.status in Assignment.HELD_STATUSES:
            if assignment.status == S.RELEASING:
                return assignment
            _transition(
                assignment, S.RELEASING, actor=actor, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
                data={"reason": Assignment.ReleaseReason.FORCE_RELEASED},
            )
            return assignment
        if reason is None:
            if assignment.status == S.PENDING:
                reason = Assignment.ReleaseReason.CANCELLED  # a queued request, or one waiting for an agent
            elif holder_is_actor and assignment.status == S.RELEASING:
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
    return assignment


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


def assignment_idle(*, assignment_id, actor: Actor) -> Assignment:
    """The sweep: an `active` assignment with no activity for a while becomes `idle`. Being idled is
    no activity, so `last_activity` stays: the pool's idle timeout still counts from the holder's
    last sign of life. Other states are left as they are. Emits `assignment.status_changed`."""
    require_operator(actor, "idle an assignment")
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id)
        if assignment.status != S.ACTIVE:
            return assignment
        _transition(
            assignment, S.IDLE, actor=actor, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
            data={"reason": "no activity"}, activity=False,
        )
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
    return assignment


def assignment_fail(*, assignment_id, actor: Actor, error: str = "", fencing_token: int | None = None) -> Assignment:
    """The holder (or an operator) reports that the work on a live assignment failed (the browser
    crashed, the profile is broken). Ended ones are left as they are (anyone else is refused, ended
    or not). Emits `assignment.status_changed`."""
    error = clean_text("error", error, max_length=1000)
    with recorded_transaction():
        assignment = _lock_assignment(assignment_id)
        _check_fencing(assignment, fencing_token)
        _require_holder_or_operator(assignment, actor, "fail")
        if assignment.status in Assignment.TERMINAL_STATUSES:
            return assignment
        _transition(
            assignment, S.FAILED, actor=actor, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
            data={"error": error}, reason=Assignment.ReleaseReason.FAILED,
        )
    return assignment


def assignment_release_for_profile(
    *, profile_id: str, agent_id: str, actor: Actor, fencing_token: int | None = None
) -> Assignment:
    """Release by profile (`POST /api/profiles/{profile_id}/release`, the seed's
    `release_profile(profile_id, agent_id)`): the live assignment of `profile_id` held by `agent_id`,
    with the rules of `assignment_release` (holder or operator, fencing, idempotent). With none live,
    that agent's latest assignment of the profile is released again (changing nothing); a profile
    held by another agent is a 409 `conflict` naming the holder; nothing at all is a 404."""
    profile_id = clean_identifier("profile_id", profile_id)
    agent_id = clean_identifier("agent_id", agent_id)
    require_self_or_operator(actor, agent_id, "release a profile")
    if not Profile.objects.filter(profile_id=profile_id).exists():
        raise NotFound(f"profile {profile_id!r} does not exist", details={"profile_id": profile_id})
    live = (
        Assignment.objects.filter(profile__profile_id=profile_id, status__in=Assignment.LIVE_STATUSES)
        .select_related("agent")
        .first()
    )
    if live is not None and (live.agent.agent_id if live.agent_id else None) != agent_id:
        raise Conflict(
            f"profile {profile_id!r} is not held by agent {agent_id!r}",
            details={
                "profile_id": profile_id,
                "holder_agent_id": live.agent.agent_id if live.agent_id else None,
                "holder_assignment_id": str(live.assignment_id),
            },
        )
    target = live or (
        Assignment.objects.filter(profile__profile_id=profile_id, agent__agent_id=agent_id)
        .order_by("-assigned_at", "-pk")
        .first()
    )
    if target is None:
        raise NotFound(
            f"agent {agent_id!r} holds no assignment of profile {profile_id!r}",
            details={"profile_id": profile_id, "agent_id": agent_id},
        )
    # The row is locked and its state read again by assignment_release: if it ended meanwhile,
    # releasing it again changes nothing.
    return assignment_release(assignment_id=target.assignment_id, actor=actor, fencing_token=fencing_token)
