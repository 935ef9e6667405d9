"""Every way to ask for profiles (`POST /api/assignments`), in one service, `assignment_take`:

- one named profile (`profile_id`), now — the plain take, `assignments.services.assignment_create`;
- one named profile, waiting up to `wait_seconds` when it is held (a queued request,
  `assignments.waits`), optionally with a `priority`;
- several named profiles (`profile_ids`): all or none, in one transaction, locked in primary-key
  order so that two such requests can never deadlock each other;
- a profile chosen by `profile_requirements` (`assignments.selection`), or waiting for a matching
  one with `wait_seconds`.

Lock order (config/locks.py): the agent row → profile rows (primary-key order) → assignment rows →
the wait-graph lock (asked for without waiting; when held, the take runs again with it taken right
after the agent row: `assignments.waits.WaitGraphBusy`) → alert rows → events.
"""

from dataclasses import dataclass, field

from django.utils import timezone

from agents.models import Agent
from assignments.alerts import alert_if_conflict_burst
from assignments.events import event_record, recorded_transaction
from assignments.guardrails import (
    profile_check_takeable,
    profile_count_take,
    profile_refusal,
)
from assignments.models import Assignment, Event, Profile
from assignments.selection import (
    clean_requirements,
    profile_least_contended,
    profile_select,
)
from assignments.selectors import AGENT_LIVE, profile_holder
from assignments.services import assignment_create
from assignments.waits import (
    MAX_WAIT_SECONDS,
    WaitGraphBusy,
    profile_has_queue,
    wait_enqueue,
    wait_graph_lock_first,
    wait_record_deadlock,
    waits_hand_over,
)
from config.actors import Actor, require_self_or_operator
from config.errors import (
    AgentAtCapacity,
    AgentUnavailable,
    Deadlock,
    NoProfileAvailable,
    NotFound,
    PoolMismatch,
    ProfileCoolingDown,
    ProfileDisabled,
    ProfileQuarantined,
    ProfileTaken,
    ValidationFailed,
)
from config.locks import lock_one, lock_one_named
from config.sql import sql_insert, sql_update
from config.validation import clean_float, clean_identifier, clean_int, clean_json_object, clean_text

S = Assignment.Status
MAX_PROFILES_PER_TAKE = 20


@dataclass
class TakeResult:
    assignments: list[Assignment] = field(default_factory=list)
    queued: bool = False  # one queued request (202), else held assignments (201)


def assignment_take(
    *,
    agent_id: str,
    actor: Actor,
    profile_id: str | None = None,
    profile_ids: list | None = None,
    profile_requirements: dict | None = None,
    wait_seconds: float = 0,
    priority: int | None = None,
    workflow_id: str = "",
    metadata: dict | None = None,
    platform_resource_id: str = "",
) -> TakeResult:
    """Take profiles for `agent_id` (see the module docstring); exactly one of `profile_id`,
    `profile_ids`, `profile_requirements`. Refusals: 409 `conflict` (held, no wait),
    `no_profile_available`, `deadlock`, `profile_cooling_down`, `quota_exceeded`,
    `profile_quarantined`, `agent_at_capacity`…; bad input 400 before anything is written.
    Emits `assignment.created` (to `active`, or to `pending` for a queued request), and for a
    refusal because of a holder or a cycle, `assignment.conflict` in a transaction of its own."""
    require_self_or_operator(actor, agent_id, "take a profile")
    given = [name for name, v in (("profile_id", profile_id), ("profile_ids", profile_ids),
                                  ("profile_requirements", profile_requirements)) if v is not None]
    if len(given) != 1:
        raise ValidationFailed(
            "give exactly one of profile_id, profile_ids, profile_requirements",
            details={name: ["give exactly one of profile_id, profile_ids, profile_requirements"]
                     for name in (given or ["profile_id"])},
        )
    wait_seconds = clean_float("wait_seconds", wait_seconds, minimum=0, maximum=MAX_WAIT_SECONDS)
    if priority is not None:
        priority = clean_int("priority", priority, minimum=-1000, maximum=1000)
    fields = {
        "workflow_id": clean_text("workflow_id", workflow_id, max_length=200),
        "metadata": clean_json_object("metadata", metadata),
        "platform_resource_id": clean_text("platform_resource_id", platform_resource_id, max_length=255),
    }
    if profile_ids is not None:
        ids = _clean_profile_ids(profile_ids)
        if wait_seconds:
            raise ValidationFailed(
                "wait_seconds cannot be combined with profile_ids: several profiles are taken all at once or not at all",
                details={"wait_seconds": ["not with profile_ids"]},
            )
        return TakeResult(assignments=_take_several(agent_id=agent_id, profile_ids=ids, actor=actor, priority=priority, **fields))
    if profile_requirements is not None:
        requirements = clean_requirements(profile_requirements)
        return _refusals_recorded(
            lambda: _take_by_requirements(agent_id=agent_id, requirements=requirements, actor=actor,
                                          wait_seconds=wait_seconds, priority=priority, **fields),
            agent_id=agent_id, actor=actor, workflow_id=fields["workflow_id"],
        )
    profile_id = clean_identifier("profile_id", profile_id)
    if not wait_seconds and priority is None:
        return TakeResult(assignments=[assignment_create(profile_id=profile_id, agent_id=agent_id, actor=actor, **fields)])
    return _refusals_recorded(
        lambda: _take_or_wait(agent_id=agent_id, profile_id=profile_id, actor=actor, wait_seconds=wait_seconds,
                              priority=priority, **fields),
        agent_id=agent_id, actor=actor, workflow_id=fields["workflow_id"],
    )


def _clean_profile_ids(value) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValidationFailed("profile_ids must be a non-empty list of profile ids", details={"profile_ids": ["not a non-empty list"]})
    if len(value) > MAX_PROFILES_PER_TAKE:
        raise ValidationFailed(f"profile_ids has more than {MAX_PROFILES_PER_TAKE} items", details={"profile_ids": ["too many items"]})
    ids = [clean_identifier("profile_ids", v) for v in value]
    if len(set(ids)) != len(ids):
        raise ValidationFailed("profile_ids names a profile twice", details={"profile_ids": ["duplicates"]})
    return ids


def _refusals_recorded(take, *, agent_id: str, actor: Actor, workflow_id: str) -> TakeResult:
    """Run `take`; a refusal because of a holder or a cycle is recorded after the rollback, in a
    transaction of its own (as `assignment_create` does): `assignment.conflict`, and the alerts."""
    try:
        return take()
    except ProfileTaken as exc:
        with recorded_transaction():
            event_record(
                Event.Type.ASSIGNMENT_CONFLICT, actor=actor, profile_id=exc.details.get("profile_id", ""),
                agent_id=agent_id, pool_name=exc.pool_name,
                data={k: v for k, v in exc.details.items() if k != "profile_id"} | {"workflow_id": workflow_id},
            )
            alert_if_conflict_burst(profile_id=exc.details.get("profile_id", ""), pool_name=exc.pool_name, actor=actor)
        raise
    except Deadlock as exc:
        pool_name = Agent.objects.filter(agent_id=agent_id).values_list("pool__name", flat=True).first() or ""
        wait_record_deadlock(exc, actor=actor, pool_name=pool_name)
        raise


# --- Pieces every path shares ---------------------------------------------------------------------


def _lock_taker(agent_id: str) -> Agent:
    # The agent row lock serialises this agent's takes, so its capacity count holds.
    try:
        agent = lock_one_named(Agent, related="pool", only=None, agent_id=agent_id)
    except Agent.DoesNotExist:
        raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id}) from None
    if not agent.may_take:
        raise AgentUnavailable(
            f"agent {agent_id!r} is {agent.status} and may not take profiles",
            details={"agent_id": agent_id, "status": agent.status},
        )
    return agent


def _check_profile_for(profile: Profile, agent: Agent) -> None:
    if not profile.enabled:
        raise ProfileDisabled(f"profile {profile.profile_id!r} is disabled", details={"profile_id": profile.profile_id})
    if profile.pool_id and profile.pool_id != agent.pool_id:
        raise PoolMismatch(
            f"profile {profile.profile_id!r} belongs to pool {profile.pool.name!r}, agent {agent.agent_id!r} to {agent.pool.name!r}",
            details={"profile_id": profile.profile_id, "profile_pool": profile.pool.name, "agent_pool": agent.pool.name},
        )


def _check_capacity(agent: Agent, adding: int) -> int:
    """Refuse when `adding` more would put the locked agent over its capacity; returns how many live
    assignments it has (queued requests included)."""
    live = len(AGENT_LIVE.rows(agent.pk))  # a few rows at most: an agent's capacity
    if live + adding > agent.capacity:
        raise AgentAtCapacity(
            f"agent {agent.agent_id!r} already holds {live} of its {agent.capacity} assignments"
            + (f" and asks for {adding} more" if adding > 1 else ""),
            details={"agent_id": agent.agent_id, "live": live, "capacity": agent.capacity, "asked": adding},
        )
    return live


def _taken(profile: Profile, holder: Assignment, pool_name: str) -> ProfileTaken:
    return ProfileTaken(
        f"profile {profile.profile_id!r} is already assigned",
        details={
            "profile_id": profile.profile_id,
            "holder_agent_id": holder.agent.agent_id if holder.agent_id else None,
            "holder_assignment_id": str(holder.assignment_id),
            "holder_status": holder.status,
        },
        pool_name=pool_name,
    )


def _grant(agent: Agent, profile: Profile, *, actor: Actor, now, priority, workflow_id, metadata, platform_resource_id,
           data: dict | None = None) -> Assignment:
    """A new `active` assignment of the locked, free `profile` with its next fencing token."""
    # Read-modify-write is safe: the profile row is locked until commit. Tokens only grow.
    profile.fencing_token += 1
    sql_update(profile, ["fencing_token", *profile_count_take(profile, now)])
    # Its own clock, read under the profile's row lock: the caller's `now` was read before the lock
    # wait, and would date this assignment before the previous holder's release (issue 10, item 10).
    granted_at = timezone.now()
    assignment = Assignment(
        profile=profile, pool=agent.pool, agent=agent, workflow_id=workflow_id, status=S.ACTIVE,
        assigned_at=granted_at, last_activity=granted_at, fencing_token=profile.fencing_token,
        platform_resource_id=platform_resource_id, metadata=metadata, priority=priority,
    )
    sql_insert(assignment)
    event_record(
        Event.Type.ASSIGNMENT_CREATED, actor=actor, assignment=assignment, to_status=S.ACTIVE,
        data={"fencing_token": assignment.fencing_token, "workflow_id": workflow_id} | (data or {}),
    )
    return assignment


# --- The paths ------------------------------------------------------------------------------------


def _graph_busy_retried(take):
    """`take(graph_first=False)`, and when it found the wait-graph lock held (`WaitGraphBusy`, its
    transaction rolled back), `take(graph_first=True)`: see `assignments.waits.WaitGraphBusy`."""

    def retried(**kwargs):
        try:
            return take(graph_first=False, **kwargs)
        except WaitGraphBusy:
            return take(graph_first=True, **kwargs)

    return retried


@_graph_busy_retried
def _take_or_wait(*, agent_id, profile_id, actor, wait_seconds, priority, graph_first, **fields) -> TakeResult:
    now = timezone.now()
    with recorded_transaction():
        agent = _lock_taker(agent_id)
        if graph_first:
            wait_graph_lock_first()
        try:
            profile = lock_one_named(Profile, related="pool", only=None, profile_id=profile_id)
        except Profile.DoesNotExist:
            raise NotFound(f"profile {profile_id!r} does not exist", details={"profile_id": profile_id}) from None
        _check_profile_for(profile, agent)
        holder = profile_holder(profile)
        if holder is None and profile_has_queue(profile.pk):
            # Free with requests queued before this one (a cooldown just ended, a quota day turned,
            # the waits sweep has not run yet): they go first.
            holder = waits_hand_over(profile=profile, fallback_pool=agent.pool, actor=actor, now=now, known_free=True)
        if holder is None:
            refusal = profile_refusal(profile, agent.pool, now)
            if isinstance(refusal, ProfileCoolingDown) and wait_seconds:
                # Free but resting: wait for the end of the cooldown (the waits sweep hands it over).
                _check_capacity(agent, 1)
                request = wait_enqueue(agent=agent, profile=profile, holder=None, actor=actor, now=now,
                                       wait_seconds=wait_seconds, priority=priority, **fields)
                return TakeResult(assignments=[request], queued=True)
            if refusal is not None:
                raise refusal
            _check_capacity(agent, 1)
            return TakeResult(assignments=[_grant(agent, profile, actor=actor, now=now, priority=priority, **fields)])
        if not wait_seconds:
            raise _taken(profile, holder, agent.pool.name)
        _check_may_wait_for(profile)
        live = _check_capacity(agent, 1)
        request = wait_enqueue(agent=agent, profile=profile, holder=holder, actor=actor, now=now,
                               wait_seconds=wait_seconds, priority=priority, graph_locked=graph_first,
                               agent_has_nothing=live == 0, **fields)
    return TakeResult(assignments=[request], queued=True)


def _check_may_wait_for(profile: Profile) -> None:
    """A request may wait for a held profile unless it will not be handed out: quarantined."""
    if profile.quarantined:
        raise ProfileQuarantined(
            f"profile {profile.profile_id!r} is quarantined until an operator clears it",
            details={"profile_id": profile.profile_id, "reason": profile.quarantine_reason},
        )


def _take_several(*, agent_id, profile_ids, actor, priority, **fields) -> list[Assignment]:
    now = timezone.now()
    try:
        with recorded_transaction():
            agent = _lock_taker(agent_id)
            # Primary-key order, whatever order the request named them in: two requests for
            # overlapping sets lock their common profiles in the same order and cannot deadlock.
            profiles = list(
                Profile.objects.select_for_update(of=("self",)).select_related("pool")
                .filter(profile_id__in=profile_ids).order_by("pk")
            )
            missing = sorted(set(profile_ids) - {p.profile_id for p in profiles})
            if missing:
                raise NotFound(f"profiles do not exist: {', '.join(missing)}", details={"profile_ids": missing})
            for profile in profiles:
                _check_profile_for(profile, agent)
            held = {
                a.profile_id: a for a in
                Assignment.objects.holding().filter(profile__in=profiles).select_related("agent")
            }
            if held:
                first = next(p for p in profiles if p.pk in held)
                exc = _taken(first, held[first.pk], agent.pool.name)
                exc.details["held"] = [
                    {"profile_id": p.profile_id, "holder_agent_id": held[p.pk].agent.agent_id if held[p.pk].agent_id else None,
                     "holder_assignment_id": str(held[p.pk].assignment_id)}
                    for p in profiles if p.pk in held
                ]
                raise exc
            for profile in profiles:
                profile_check_takeable(profile, agent.pool, now)
            _check_capacity(agent, len(profiles))
            group = [p.profile_id for p in profiles]
            by_id = {
                p.profile_id: _grant(agent, p, actor=actor, now=now, priority=priority, data={"profile_ids": group}, **fields)
                for p in profiles
            }
    except ProfileTaken as exc:
        with recorded_transaction():
            event_record(
                Event.Type.ASSIGNMENT_CONFLICT, actor=actor, profile_id=exc.details["profile_id"], agent_id=agent_id,
                pool_name=exc.pool_name,
                data={k: v for k, v in exc.details.items() if k != "profile_id"} | {"workflow_id": fields["workflow_id"]},
            )
        raise
    return [by_id[pid] for pid in profile_ids]


@_graph_busy_retried
def _take_by_requirements(*, agent_id, requirements, actor, wait_seconds, priority, graph_first, **fields) -> TakeResult:
    now = timezone.now()
    with recorded_transaction():
        agent = _lock_taker(agent_id)
        if graph_first:
            wait_graph_lock_first()
        live = _check_capacity(agent, 1)
        profile = profile_select(requirements=requirements, agent=agent, now=now)
        if profile is not None:
            return TakeResult(assignments=[
                _grant(agent, profile, actor=actor, now=now, priority=priority, data={"requirements": requirements}, **fields)
            ])
        if not wait_seconds:
            raise NoProfileAvailable(
                "no free profile matches the requirements (enabled, healthy, not quarantined, not cooling down, under its quota)",
                details={"profile_requirements": requirements},
            )
        # Wait for the matching profile with the shortest queue (held, or resting: the waits sweep
        # hands it over when its cooldown ends).
        candidate = profile_least_contended(requirements=requirements, agent=agent, now=now)
        if candidate is None:
            raise NoProfileAvailable(
                "no profile matches the requirements, so there is none to wait for",
                details={"profile_requirements": requirements},
            )
        profile = lock_one(Profile, related=("pool",), pk=candidate.pk)
        holder = profile_holder(profile)
        request = wait_enqueue(agent=agent, profile=profile, holder=holder, actor=actor, now=now,
                               wait_seconds=wait_seconds, priority=priority, graph_locked=graph_first,
                               agent_has_nothing=live == 0, **fields)
    return TakeResult(assignments=[request], queued=True)
