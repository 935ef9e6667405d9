"""Queued requests: an agent waiting for a PROFILE someone else holds (DESIGN.md, "Waiting, priority
and deadlocks").

The model. A queued request is an Assignment that is `pending` WITH an agent (`queued_q`), with a
deadline (`wait_until`) and a `priority` (null: its agent's). It is not the profile's holder: the
partial unique index of invariant 1 covers only the holder (`holding_q`: active, idle, releasing,
or pending with NO agent — the pool's session waiting for an AGENT after failover, `waiting_q`), so
any number of requests queue behind one holder, and the index still guards the one moment that
matters — a queued request becoming the holder (`pending → active`, the hand-over). A separate
wait table would have given every reader two places to look for "what does this agent want"
(`GET /api/assignments/{id}` must answer for the request before and after it is served, with one
id); a pending row with an agent is what DESIGN.md already describes for a queued request.

Queued requests count against their agent's `capacity` (they are live), so a hand-over never
needs room the agent does not have.

The hand-over happens in the transaction that frees the profile (`waits_profile_freed`, called by
`assignments.services._transition` for every change that ends a holder: release, confirmation of a
force-release, expiry, failure, a failover's release of what was being released). Not through the
after-commit consumers: between that commit and a consumer's own transaction the profile would be
free for anyone to take past the queue, and a failed consumer would leave it so until a sweep; in
one transaction the release and the hand-over commit together, with their events in order, so the
log stays gap-free and shows `assignment.released` then `assignment.status_changed` (pending →
active, a new fencing token). What a hand-over cannot do at once — the pool's cooldown or daily
quota holds the profile back, or the next request's row was busy — the waits sweep
(`assignments.jobs.waits_sweep`) does later.

Lock order (config/locks.py): the freed holder's row (already held by the caller) → the profile
row → queued request rows; a new request: agent → profile → the holder's row (preemption) → the
wait-graph lock (`WAIT_GRAPH`, asked for without waiting) → alerts → events; a new request that found
the graph lock held tries again as agent → the wait-graph lock → profile → … (`WaitGraphBusy`).

Deadlocks. Each queued request is an edge "its agent waits for the profile's holder". A request
whose edge would close a cycle is refused (409 `deadlock`, `details.cycle`), with an
`assignment.conflict` event (`data.reason = "deadlock"`) and a `deadlock` alert. Cycles can still
form otherwise — a hand-over or a failover makes a waiting agent a holder — and the cycle sweep
(`assignments.jobs.wait_cycles_break`) breaks each by expiring its youngest request.

A lost agent's (stale, drained, deregistered, re-registered) queued requests are cancelled
(`released`, reason `cancelled`) by the failover, not moved to another agent: the request was that
agent's own wish, and nobody else asked for that profile on its behalf.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent
from assignments.alerts import ALERTS_ACTOR, alert_raise
from assignments.events import event_record, recorded_transaction
from assignments.guardrails import profile_count_take, profile_refusal
from assignments.models import ASSIGNMENT_TRANSITIONS, Alert, Assignment, Event, Profile
from assignments.selectors import ASSIGNMENT_AGENT_COLUMNS, ASSIGNMENT_FIELDS, PROFILE_HELD, with_agent
from config import locks
from config.actors import Actor, require_operator
from config.errors import Conflict, Deadlock, NotFound
from config.sql import EXISTS, CompiledQuery, sql_insert, sql_update
from pools.models import AgentPool

S = Assignment.Status
MAX_WAIT_SECONDS = 3600
# Agents whose queued requests may be served (a lost agent's are cancelled by its failover).
_SERVABLE_AGENT_STATUSES = (Agent.Status.ACTIVE, Agent.Status.BUSY)


# --- Order of the queue ---------------------------------------------------------------------------


def _effective_priority():
    return Coalesce(F("priority"), F("agent__priority"), Value(0))


def queue_order(policy: str) -> list:
    """`fifo`: first come, first served. `priority`: the request's priority (default its agent's),
    highest first, then first come."""
    if policy == AgentPool.ConflictPolicy.PRIORITY:
        return [F("_priority").desc(), "assigned_at", "pk"]
    return ["assigned_at", "pk"]


def profile_queue(profile: Profile | int, policy: str):
    """The queued requests for `profile` (or its primary key), next first (a queryset)."""
    return (
        Assignment.objects.queued().filter(profile=profile)
        .annotate(_priority=_effective_priority())
        .order_by(*queue_order(policy))
    )


# A profile's queue in order, one statement per policy, compiled once: read by every waiting take.
_QUEUE_IDS = {
    policy: CompiledQuery(
        lambda profile_pk, policy=policy: profile_queue(profile_pk, policy).values_list("pk"),
        sentinels=(-7_000_000_001,),
    )
    for policy in AgentPool.ConflictPolicy.values
}


def _policy_pool(profile: Profile, fallback: AgentPool) -> AgentPool:
    return profile.pool if profile.pool_id else fallback


def queue_position(assignment: Assignment) -> int | None:
    """1 for the next request served, 2 after it…; None when it is not queued. One query."""
    if assignment.status != S.PENDING or assignment.agent_id is None:
        return None
    pool = _policy_pool(assignment.profile, assignment.pool)
    ids = [row[0] for row in _QUEUE_IDS[pool.conflict_policy].rows(assignment.profile_id)]
    return ids.index(assignment.pk) + 1 if assignment.pk in ids else None


# --- The wait-for graph (pure functions over plain data) -----------------------------------------


@dataclass(frozen=True)
class Edge:
    """`agent_id` waits (queued request `assignment_pk`, since `requested_at`) for `profile_id`,
    held by `holder_agent_id`."""

    agent_id: str
    profile_id: str
    holder_agent_id: str
    assignment_pk: int = 0
    requested_at: object = None


def find_path(edges: list[Edge], start: str, target: str) -> list[Edge] | None:
    """The shortest chain of waits from agent `start` to agent `target` (breadth first), or None."""
    by_agent: dict[str, list[Edge]] = {}
    for edge in edges:
        by_agent.setdefault(edge.agent_id, []).append(edge)
    if start == target:
        return []
    seen, frontier = {start}, [(start, [])]
    while frontier:
        following = []
        for agent, path in frontier:
            for edge in sorted(by_agent.get(agent, []), key=lambda e: (e.profile_id, e.holder_agent_id)):
                if edge.holder_agent_id == target:
                    return path + [edge]
                if edge.holder_agent_id not in seen:
                    seen.add(edge.holder_agent_id)
                    following.append((edge.holder_agent_id, path + [edge]))
        frontier = following
    return None


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One cycle of waits in the graph (each agent waits for the next one's profile), or None."""
    for agent in sorted({e.agent_id for e in edges}):
        for edge in sorted((e for e in edges if e.agent_id == agent), key=lambda e: e.profile_id):
            rest = find_path(edges, edge.holder_agent_id, agent)
            if rest is not None:
                return [edge] + rest
    return None


def cycle_details(cycle: list[Edge]) -> list[dict]:
    return [{"agent_id": e.agent_id, "waits_for_profile_id": e.profile_id, "held_by_agent_id": e.holder_agent_id}
            for e in cycle]


# Read by every new wait (under the wait-graph lock): compiled once (config/sql.py).
_QUEUED_PROFILE_HOLDERS = CompiledQuery(
    lambda: Assignment.objects.filter(status__in=Assignment.HELD_STATUSES)
    .filter(profile_id__in=Assignment.objects.queued().values("profile_id"))
    .values_list("profile_id", "agent__agent_id"),
    sentinels=(),
)
_QUEUED_REQUESTS = CompiledQuery(
    lambda: Assignment.objects.queued().values_list("pk", "agent__agent_id", "profile_id", "profile__profile_id", "assigned_at"),
    sentinels=(),
)


def wait_graph_edges() -> list[Edge]:
    """Every queued request whose profile has an agent holding it, as an edge. Two queries."""
    holders = dict(_QUEUED_PROFILE_HOLDERS.rows())
    edges = []
    for pk, agent_id, profile_pk, profile_id, requested_at in _QUEUED_REQUESTS.rows():
        holder = holders.get(profile_pk)
        if holder is not None:
            edges.append(Edge(agent_id, profile_id, holder, pk, requested_at))
    return edges


# --- Joining the queue ----------------------------------------------------------------------------

_QUEUED_FOR = CompiledQuery(
    lambda profile_pk, agent_pk: Assignment.objects.queued().filter(profile_id=profile_pk, agent_id=agent_pk)
    .values_list("assignment_id")[:1],
    sentinels=(-7_000_000_001, -7_000_000_002),
)


class WaitGraphBusy(Exception):
    """Raised by `wait_enqueue` when another request holds the wait-graph lock and the caller has not
    taken it first: the caller's transaction rolls back, letting go of the profile's row lock, and
    the take runs again with the graph lock taken before that row lock (`wait_graph_lock_first`).

    Why: a request waits for the graph lock while holding its profile's row lock, and the release
    of that profile needs the row lock — so in a burst of new waits each release (and its hand-over)
    queued behind every new wait in the system (`make bench`'s contention phase: PostgreSQL showed
    releases waiting on the profile's row, whose taker waited on the graph lock). Asked for without
    waiting first, the graph lock costs an uncontended request nothing more."""


def wait_graph_lock_first() -> None:
    """A take's second attempt after `WaitGraphBusy`: the graph lock, taken after the agent's row
    lock and before any profile's, so the wait for it holds no profile's row."""
    locks.xact_lock(locks.WAIT_GRAPH)


def wait_enqueue(
    *, agent: Agent, profile: Profile, holder: Assignment | None, actor: Actor, now, wait_seconds: float,
    priority: int | None, workflow_id: str, metadata: dict, platform_resource_id: str, graph_locked: bool = False,
    agent_has_nothing: bool = False,
) -> Assignment:
    """Queue `agent`'s request for `profile`, inside the caller's transaction, with `agent` and
    `profile` locked and `holder` the profile's holder (None when it is free but held back: cooling
    down). Refuses a request that would close a cycle of waits (`Deadlock`, nothing written) and a
    second request of the same agent for the same profile (`Conflict`). With the pool's
    `preemption`, a request of strictly higher priority than the holder's sends the holder to
    `releasing` (`assignment.status_changed`, reason `preempted`). Emits `assignment.created`
    (to `pending`, `data.queued`). Returns the request with its `queue_position`. `graph_locked`: the
    caller holds the wait-graph lock already (`wait_graph_lock_first`); otherwise it is asked for
    without waiting, and `WaitGraphBusy` raised when another request holds it. `agent_has_nothing`:
    the agent, whose row the caller has locked, holds and waits for nothing else (its live count is
    0) — then no cycle can run through it, and the graph is neither locked nor read (see below)."""
    if holder is not None and holder.agent_id == agent.pk:
        raise Conflict(
            f"agent {agent.agent_id!r} already holds profile {profile.profile_id!r}",
            details={"profile_id": profile.profile_id, "holder_assignment_id": str(holder.assignment_id)},
        )
    waiting = [] if agent_has_nothing else _QUEUED_FOR.rows(profile.pk, agent.pk)
    already = waiting[0][0] if waiting else None
    if already is not None:
        raise Conflict(
            f"agent {agent.agent_id!r} already waits for profile {profile.profile_id!r}",
            details={"profile_id": profile.profile_id, "queued_assignment_id": str(already)},
        )
    pool = _policy_pool(profile, agent.pool)
    request_priority = priority if priority is not None else agent.priority
    if holder is not None and holder.agent_id is not None:
        _preempt_if_due(holder, pool=pool, request_priority=request_priority, actor=actor, now=now)
    if holder is not None and holder.agent_id is not None and not agent_has_nothing:
        # Serialises every new wait while it reads the graph and adds its own edge (config/locks.py).
        # Not needed when the agent holds and waits for nothing: a cycle through this new edge needs
        # another one into the agent (someone waiting for a profile it holds), and it can become a
        # holder before this commits only through a take, a failover or a rebalance — each locks its
        # row first, which the caller holds — or a hand-over of another of its requests — it has
        # none. (An agent that waits only when it holds nothing — one profile at a time, as most
        # fleets' agents work — never takes it.)
        if not graph_locked and not locks.try_xact_lock(locks.WAIT_GRAPH):
            raise WaitGraphBusy
        holder_agent_id = holder.agent.agent_id
        path = find_path(wait_graph_edges(), holder_agent_id, agent.agent_id)
        if path is not None:
            cycle = [Edge(agent.agent_id, profile.profile_id, holder_agent_id)] + path
            raise Deadlock(
                f"agent {agent.agent_id!r} waiting for profile {profile.profile_id!r} would close a cycle of "
                f"{len(cycle)} agents waiting for each other",
                details={"profile_id": profile.profile_id, "agent_id": agent.agent_id, "cycle": cycle_details(cycle)},
            )
    # Arrival is when the profile's lock let this request in: requests for one profile queue in the
    # order they held its lock, so fifo order, positions and the events all agree.
    now = timezone.now()
    request = Assignment(
        profile=profile,
        pool=agent.pool,
        agent=agent,
        workflow_id=workflow_id,
        status=S.PENDING,
        assigned_at=now,
        last_activity=now,
        # No token yet (0): the hand-over issues the profile's next one. A copy of the holder's
        # token would let a waiter pass itself off as the holder to whatever checks the tokens.
        fencing_token=0,
        platform_resource_id=platform_resource_id,
        metadata=metadata,
        priority=priority,
        wait_until=now + timedelta(seconds=wait_seconds),
    )
    sql_insert(request)
    request.queue_position = queue_position(request)
    event_record(
        Event.Type.ASSIGNMENT_CREATED,
        actor=actor,
        assignment=request,
        to_status=S.PENDING,
        data={
            "queued": True,
            "workflow_id": workflow_id,
            "wait_seconds": wait_seconds,
            "wait_until": request.wait_until.isoformat(),
            "priority": request_priority,
            "queue_position": request.queue_position,
            "holder_assignment_id": str(holder.assignment_id) if holder is not None else None,
        },
    )
    return request


def _holder_priority(holder: Assignment) -> int:
    return holder.priority if holder.priority is not None else holder.agent.priority


def _preempt_if_due(holder: Assignment, *, pool: AgentPool, request_priority: int, actor: Actor, now) -> None:
    if not pool.preemption or holder.status not in (S.ACTIVE, S.IDLE):
        return
    if request_priority <= _holder_priority(holder):
        return
    # The holder's row, after the profile's — the reverse of a release, which locks the holder's row
    # and then the profile. SKIP LOCKED, so the two never wait for each other: a holder row someone
    # holds is being changed right now (released, moved), and a preemption then has nothing to do.
    holder = (
        Assignment.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("profile", "pool", "agent").filter(pk=holder.pk).first()
    )
    if holder is None or holder.status not in (S.ACTIVE, S.IDLE):
        return
    _set_status(
        holder, S.RELEASING, actor=actor, now=now, event_type=Event.Type.ASSIGNMENT_STATUS_CHANGED,
        data={"reason": "preempted", "preempted_by_priority": request_priority, "holder_priority": _holder_priority(holder)},
    )


def wait_record_deadlock(exc: Deadlock, *, actor: Actor, pool_name: str) -> None:
    """After a refused request rolled back: its `assignment.conflict` event (`data.reason =
    "deadlock"`) and a `deadlock` alert, in a transaction of their own."""
    with recorded_transaction():
        event_record(
            Event.Type.ASSIGNMENT_CONFLICT,
            actor=actor,
            profile_id=exc.details["profile_id"],
            agent_id=exc.details["agent_id"],
            pool_name=pool_name,
            data={"reason": "deadlock", "cycle": exc.details["cycle"]},
        )
        _alert_deadlock(exc.details["cycle"], pool_name=pool_name, refused=True)


def _alert_deadlock(cycle: list[dict], *, pool_name: str, refused: bool) -> None:
    agents = sorted(step["agent_id"] for step in cycle)
    alert_raise(
        kind=Alert.Kind.DEADLOCK,
        severity=Alert.Severity.WARNING,
        actor=ALERTS_ACTOR,
        message=(
            f"agents {', '.join(agents)} wait for each other's profiles"
            + (" (the request closing the cycle was refused)" if refused else " (the youngest wait was expired)")
        ),
        dedup_key=f"{Alert.Kind.DEADLOCK}:{'|'.join(agents)}",
        pool=pool_name,
        data={"cycle": cycle},
    )


# --- Status changes of queued requests ------------------------------------------------------------


def _set_status(assignment: Assignment, to_status: str, *, actor: Actor, now, event_type: str, data=None, reason="") -> None:
    ASSIGNMENT_TRANSITIONS.check(
        assignment.status, to_status, subject=str(assignment.assignment_id),
        details={"assignment_id": str(assignment.assignment_id)},
    )
    from_status = assignment.status
    assignment.status = to_status
    assignment.last_activity = now
    update = ["status", "last_activity"]
    if to_status in Assignment.TERMINAL_STATUSES:
        assignment.released_at = now
        assignment.release_reason = reason
        update += ["released_at", "release_reason"]
    assignment.save(update_fields=update)
    event_record(event_type, actor=actor, assignment=assignment, from_status=from_status, to_status=to_status, data=data)


def wait_cancel(*, assignment: Assignment, actor: Actor, reason: str, now=None) -> Assignment:
    """End a queued request whose row the caller has locked (its agent was lost): `released`,
    reason `cancelled`. Emits `assignment.released`."""
    _set_status(
        assignment, S.RELEASED, actor=actor, now=now or timezone.now(), event_type=Event.Type.ASSIGNMENT_RELEASED,
        data={"release_reason": Assignment.ReleaseReason.CANCELLED, "reason": reason},
        reason=Assignment.ReleaseReason.CANCELLED,
    )
    return assignment


def wait_expire(*, assignment_id, actor: Actor, reason: str = "wait timeout") -> Assignment | None:
    """End a queued request (its wait ran out, or the cycle sweep chose it): `expired`. Anything
    else — served meanwhile, cancelled — is left as it is (returns None). Emits `assignment.expired`."""
    require_operator(actor, "expire a waiting request")
    with recorded_transaction():
        assignment = (
            Assignment.objects.queued().select_for_update(of=("self",), skip_locked=True)
            .select_related("profile", "pool", "agent").filter(assignment_id=assignment_id).first()
        )
        if assignment is None:
            return None
        _set_status(
            assignment, S.EXPIRED, actor=actor, now=timezone.now(), event_type=Event.Type.ASSIGNMENT_EXPIRED,
            data={"reason": reason}, reason=Assignment.ReleaseReason.EXPIRED,
        )
    return assignment


# --- The hand-over --------------------------------------------------------------------------------


def frees_profile(from_status: str, to_status: str, assignment: Assignment) -> bool:
    """Whether this change ended the profile's holder (so the profile is free)."""
    if to_status not in Assignment.TERMINAL_STATUSES:
        return False
    return from_status in Assignment.HELD_STATUSES or (from_status == S.PENDING and assignment.agent_id is None)


# The statements of `waits_profile_freed`: the queue's compiled once from the ORM's one definition of
# a queued request (its slot: an impossible primary key).
_RELEASED_AT_SQL = f"UPDATE {Profile._meta.db_table} SET last_released_at = %s WHERE id = %s"
_ANY_QUEUED = CompiledQuery(
    lambda pk: Assignment.objects.queued().filter(profile_id=pk), sentinels=(-7_000_000_001,), kind=EXISTS
)


def profile_has_queue(profile_pk: int) -> bool:
    """Whether requests are queued for this profile (one compiled statement: on the take path)."""
    return _ANY_QUEUED.exists(profile_pk)


def waits_profile_freed(*, assignment: Assignment, actor: Actor, now) -> Assignment | None:
    """Called, in its transaction, by the change that ended `assignment`, the profile's holder:
    note when the profile was released (cooldown, selection order) and hand it to the next queued
    request. Returns the request served, if any."""
    # On every release (the hot path), compiled once (config/sql.py). The queue must be read by a
    # statement whose snapshot is taken once this transaction holds the profile's row lock, so that it
    # sees a request queued by a transaction that held that lock a moment ago. A release took the lock
    # with the holder's row (`profile_row_locked`): then the UPDATE that records the release also
    # answers whether anyone waits, one round trip. Otherwise the UPDATE takes the lock (after the
    # freed holder's row: the lock order above) and a second statement reads the queue — the same
    # UPDATE's RETURNING would not do: its snapshot is from before its lock wait.
    if getattr(assignment, "profile_row_locked", False) and connection.vendor == "postgresql":
        queued_sql, queued_params = _ANY_QUEUED.sql(assignment.profile_id)
        with connection.cursor() as cursor:
            cursor.execute(f"{_RELEASED_AT_SQL} RETURNING EXISTS ({queued_sql})",
                           [now, assignment.profile_id, *queued_params])
            queued = cursor.fetchone()[0]
    else:
        with connection.cursor() as cursor:
            cursor.execute(_RELEASED_AT_SQL, [now, assignment.profile_id])
        queued = _ANY_QUEUED.exists(assignment.profile_id)
    if not queued:
        return None
    # Locked just above: reading it again with FOR UPDATE waits for nothing. Every column, as
    # the guardrails and the event read them; one statement built once.
    profile = locks.lock_one_named(Profile, related="pool", only=None, id=assignment.profile_id)
    # A profile of no pool follows the freed holder's pool, which the release read narrowly (its
    # name): its policy and guardrails in one read, not a lazy load of each.
    fallback = assignment.pool if profile.pool_id else AgentPool.objects.get(pk=assignment.pool_id)
    # The profile is free: the assignment that just ended was its one holder (invariant 1).
    return waits_hand_over(profile=profile, fallback_pool=fallback, actor=actor, now=now, known_free=True)


# The next request a hand-over serves, per policy, compiled once (every hand-over reads it): its
# row locked (SKIP LOCKED: a request its agent is cancelling, or the sweep is expiring, is passed
# over), with its pool's name and its agent's id and priority (what the event and a take's refusal
# read). The slots: the profile's primary key, and the time the deadline must be after.
_NOW_SLOT = datetime(1901, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
_QUEUE_HEAD = {
    policy: CompiledQuery(
        lambda profile_pk, now, policy=policy: profile_queue(profile_pk, policy)
        .filter(wait_until__gt=now, agent__status__in=_SERVABLE_AGENT_STATUSES)
        .select_for_update(of=("self",), skip_locked=True)
        .values_list(*ASSIGNMENT_FIELDS, "pool__name", *ASSIGNMENT_AGENT_COLUMNS)[:1],
        sentinels=(-7_000_000_001, _NOW_SLOT),
    )
    for policy in AgentPool.ConflictPolicy.values
}


def _queue_head(profile: Profile, policy: str, now) -> Assignment | None:
    query = _QUEUE_HEAD[policy]
    found = query.objects(Assignment, ASSIGNMENT_FIELDS, profile.pk, now)
    if not found:
        return None
    request = found[0]
    pool_name, *agent_values = request._extra
    request.pool = AgentPool.from_db(query.using, ["id", "name"], [request.pool_id, pool_name])
    return with_agent(request, agent_values, using=query.using)


def waits_hand_over(*, profile: Profile, fallback_pool: AgentPool, actor: Actor, now, known_free: bool = False) -> Assignment | None:
    """Give the free, locked `profile` to its next queued request by the pool's `conflict_policy`:
    `pending → active` with the profile's next fencing token. Nothing when the profile is held,
    disabled, quarantined, cooling down or over its quota (the waits sweep retries), or nobody
    waits. `known_free`: the caller knows nobody holds it (the change that freed it, a take that
    found no holder), so that is not asked again. Emits `assignment.status_changed`
    (`data.reason = "handed_over"`)."""
    pool = _policy_pool(profile, fallback_pool)
    if not profile.enabled or profile_refusal(profile, pool, now) is not None:
        return None
    request = _queue_head(profile, pool.conflict_policy, now)
    if request is None:
        return None
    if not known_free and PROFILE_HELD.exists(profile.pk):
        return None
    request.profile = profile
    # Read-modify-write is safe: the profile row is locked until commit. Tokens only grow.
    profile.fencing_token += 1
    sql_update(profile, ["fencing_token", *profile_count_take(profile, now)])
    requested_at = request.assigned_at
    ASSIGNMENT_TRANSITIONS.check(
        request.status, S.ACTIVE, subject=str(request.assignment_id), details={"assignment_id": str(request.assignment_id)}
    )
    request.status = S.ACTIVE
    request.fencing_token = profile.fencing_token
    request.assigned_at = now
    request.last_activity = now
    request.wait_until = None  # served: no longer a request (a row with a deadline was never served)
    sql_update(request, ["status", "fencing_token", "assigned_at", "last_activity", "wait_until"])
    event_record(
        Event.Type.ASSIGNMENT_STATUS_CHANGED,
        actor=actor,
        assignment=request,
        from_status=S.PENDING,
        to_status=S.ACTIVE,
        data={
            "reason": "handed_over",
            "fencing_token": request.fencing_token,
            "conflict_policy": pool.conflict_policy,
            "requested_at": requested_at.isoformat(),
            "waited_seconds": round((now - requested_at).total_seconds(), 3),
        },
    )
    return request


def waits_serve_profile(*, profile_pk: int, actor: Actor) -> Assignment | None:
    """The sweep's hand-over of a free profile that has queued requests (its cooldown ended, a new
    UTC day reset its quota, or the request next in line was busy at release). Own transaction."""
    now = timezone.now()
    with recorded_transaction():
        profile = Profile.objects.select_for_update(of=("self",)).select_related("pool").filter(pk=profile_pk).first()
        if profile is None:
            return None
        head = Assignment.objects.queued().filter(profile=profile).select_related("pool").order_by("assigned_at", "pk").first()
        if head is None:
            return None
        return waits_hand_over(profile=profile, fallback_pool=head.pool, actor=actor, now=now)


def waits_break_cycle(*, actor: Actor) -> list[dict] | None:
    """Find one cycle of waits and break it by expiring its youngest request (reason `deadlock`),
    raising a `deadlock` alert. Returns the cycle broken, or None when there is none — or when
    another worker is expiring that request right now (it breaks the cycle)."""
    require_operator(actor, "break wait cycles")
    cycle = find_cycle(wait_graph_edges())
    if cycle is None:
        return None
    youngest = max(cycle, key=lambda e: (e.requested_at, e.assignment_pk))
    assignment_id = Assignment.objects.filter(pk=youngest.assignment_pk).values_list("assignment_id", flat=True).first()
    if assignment_id is None:
        raise NotFound("the request to expire is gone", details={})
    details = cycle_details(cycle)
    with recorded_transaction():
        expired = wait_expire(assignment_id=assignment_id, actor=actor, reason="deadlock")
        if expired is None:
            return None
        _alert_deadlock(details, pool_name=expired.pool.name, refused=False)
    return details
