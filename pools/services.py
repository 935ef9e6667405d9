"""Every write to a pool, and the moves of assignments between a pool's agents (invariant 5).

Each move is a status change of the assignment (to `active` under its new agent, or to `pending`
with no agent) and asks the assignment table first (`assignment_check_transition`)."""

from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, Exists, OuterRef, Q, Value, When
from django.utils import timezone

from agents.models import Agent
from assignments.alerts import ALERTS_ACTOR, alert_key_pool_no_healthy_agent, alert_raise, alert_resolve
from assignments.events import event_record, recorded_transaction
from assignments.models import Alert, Assignment, Event, Profile
from assignments.services import assignment_check_transition, assignment_release
from assignments.waits import wait_cancel
from config.actors import Actor, require_operator
from config.errors import Conflict, NotFound, ValidationFailed
from config.locks import pool_lock_moves
from config.sql import EXISTS, CompiledQuery
from config.tokens import token_new
from config.validation import clean_bool, clean_choice, clean_fields, clean_float, clean_identifier, clean_int, clean_text
from pools.balancing import Candidate, Work, plan_moves
from pools.models import AgentPool, Task
from pools.queue import tasks_requeue_for_agent
from pools.selectors import agent_has_open_tasks

_WRITABLE_FIELDS = {
    "platform": lambda v: clean_choice("platform", v, AgentPool.Platform),
    "region": lambda v: clean_text("region", v, max_length=64),
    "strategy": lambda v: clean_choice("strategy", v, AgentPool.Strategy),
    "heartbeat_timeout_seconds": lambda v: clean_int("heartbeat_timeout_seconds", v, minimum=1, maximum=86400),
    "assignment_idle_timeout_seconds": lambda v: clean_int(
        "assignment_idle_timeout_seconds", v, minimum=1, maximum=30 * 86400
    ),
    "min_health_score": lambda v: clean_float("min_health_score", v, minimum=0.0, maximum=1.0),
    "conflict_policy": lambda v: clean_choice("conflict_policy", v, AgentPool.ConflictPolicy),
    "preemption": lambda v: clean_bool("preemption", v),
    "profile_cooldown_seconds": lambda v: clean_int("profile_cooldown_seconds", v, minimum=0, maximum=30 * 86400),
    "profile_daily_quota": lambda v: clean_int("profile_daily_quota", v, minimum=0, maximum=1_000_000),
    "task_capacity": lambda v: clean_int("task_capacity", v, minimum=1, maximum=10_000),
}


def pool_clean_fields(fields: dict) -> dict:
    return clean_fields("pool", fields, _WRITABLE_FIELDS)


def pool_check_name(name) -> str:
    name = clean_identifier("name", name)
    if not all(ch.isalnum() or ch in "-_" for ch in name) or len(name) > 64:
        raise ValidationFailed("name must be a slug: letters, digits, - and _ (at most 64)", details={"name": ["not a slug"]})
    return name


def pool_create(*, name: str, actor: Actor, **fields) -> tuple[AgentPool, str]:
    """Create a pool. Returns it with its enrollment token, which is shown this once. Emits `pool.created`."""
    require_operator(actor, "create a pool")
    name = pool_check_name(name)
    cleaned = pool_clean_fields(fields)
    token, hashed = token_new("enr")
    with recorded_transaction():
        pool = AgentPool(name=name, enrollment_token_hash=hashed, **cleaned)
        try:
            with transaction.atomic():
                pool.save(force_insert=True)
        except IntegrityError:
            raise Conflict(f"a pool named {name!r} already exists", details={"name": name}) from None
        event_record(Event.Type.POOL_CREATED, actor=actor, pool=pool, data={"fields": sorted(cleaned)})
    return pool, token


def pool_update(*, name: str, actor: Actor, rotate_enrollment_token: bool = False, **fields) -> tuple[AgentPool, str | None]:
    """Change a pool's settings, and optionally issue a new enrollment token (the old one stops
    working). Emits `pool.updated`."""
    require_operator(actor, "edit a pool")
    cleaned = pool_clean_fields(fields)
    token = None
    with recorded_transaction():
        pool = AgentPool.objects.select_for_update().filter(name=name).first()
        if pool is None:
            raise NotFound(f"pool {name!r} does not exist", details={"name": name})
        changed = {k: v for k, v in cleaned.items() if getattr(pool, k) != v}
        for k, v in changed.items():
            setattr(pool, k, v)
        update = list(changed)
        if rotate_enrollment_token:
            token, pool.enrollment_token_hash = token_new("enr")
            update.append("enrollment_token_hash")
        if not update:
            return pool, None
        pool.save(update_fields=[*update, "updated_at"])
        event_record(
            Event.Type.POOL_UPDATED,
            actor=actor,
            pool=pool,
            data={"fields": sorted(changed), "enrollment_token_rotated": rotate_enrollment_token},
        )
    return pool, token


@dataclass
class Moves:
    moved: list[Assignment] = field(default_factory=list)  # now held by another agent
    waiting: list[Assignment] = field(default_factory=list)  # pending, no agent until one is free
    released: list[Assignment] = field(default_factory=list)  # were being released anyway
    cancelled: list[Assignment] = field(default_factory=list)  # the lost agent's queued requests
    tasks_requeued: list[Task] = field(default_factory=list)  # the lost agent's tasks, back in the queue
    tasks_failed: list[Task] = field(default_factory=list)  # ... or failed: that was their last attempt


def _lock_candidates(pool_id: int, *, extra_pk: int | None = None) -> tuple[dict[int, Agent], dict[int, int]]:
    """Lock the pool's agents that may be handed work (and `extra_pk`), in primary-key order so that
    concurrent passes cannot deadlock, and count what each holds. The locks keep those counts true
    until commit: an agent taking a profile locks its own row first."""
    rows = Agent.objects.select_for_update(of=("self",)).filter(pool_id=pool_id, status=Agent.Status.ACTIVE)
    if extra_pk is not None:
        rows = rows | Agent.objects.filter(pk=extra_pk)
    agents = {a.pk: a for a in rows.order_by("pk")}
    counts = dict(
        Assignment.objects.filter(agent_id__in=list(agents), status__in=Assignment.LIVE_STATUSES)
        .values_list("agent_id")
        .annotate(n=Count("id"))
    )
    return agents, counts


def _candidates(agents: dict[int, Agent], counts: dict[int, int], *, exclude: int | None = None) -> list[Candidate]:
    def fraction(metrics, key):
        value = metrics.get(key, 0)
        return value / 100.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    return [
        Candidate(
            key=a.pk,
            agent_id=a.agent_id,
            health_score=a.health_score,
            live=counts.get(a.pk, 0),
            capacity=a.capacity,
            weight=a.weight,
            priority=a.priority,
            region=a.region,
            cpu=fraction(a.load_metrics, "cpu"),
            memory=fraction(a.load_metrics, "memory"),
            last_assigned_at=a.last_assigned_at,
        )
        for a in agents.values()
        if a.pk != exclude and a.accepts_new_work
    ]


def _apply_plan(plan, assignments: dict[int, Assignment], agents: dict[int, Agent], *, actor: Actor, now, moves: Moves) -> None:
    """Persist a planned pass: each assignment goes to its chosen agent (active) or waits (pending),
    with a new fencing token either way, so whoever held it before is fenced off at once, and
    without the previous holder's `platform_resource_id`."""
    profile_pks = sorted({assignments[work.key].profile_id for work, _ in plan})
    # Profiles are locked in primary-key order; each move bumps its profile's fencing token.
    profiles = {p.pk: p for p in Profile.objects.select_for_update().filter(pk__in=profile_pks).order_by("pk")}
    handed_at = {}  # agent pk → when it was last handed work in this plan (round robin's turn)
    for work, chosen in plan:
        assignment = assignments[work.key]
        profile = profiles[assignment.profile_id]
        # Read-modify-write is safe here: the profile row is locked until commit.
        profile.fencing_token += 1
        profile.save(update_fields=["fencing_token"])
        assignment.profile = profile
        from_status = assignment.status
        from_agent = assignment.agent.agent_id if assignment.agent_id else None
        assignment_check_transition(
            assignment, Assignment.Status.ACTIVE if chosen is not None else Assignment.Status.PENDING
        )
        if chosen is not None:
            assignment.agent = agents[chosen.key]
            assignment.status = Assignment.Status.ACTIVE
            handed_at[chosen.key] = chosen.last_assigned_at or now
            moves.moved.append(assignment)
        else:
            assignment.agent = None
            assignment.status = Assignment.Status.PENDING
            moves.waiting.append(assignment)
        assignment.fencing_token = profile.fencing_token
        assignment.last_activity = now
        # The pod or container named was the previous holder's; the new one reports its own.
        assignment.platform_resource_id = ""
        assignment.save(update_fields=["agent", "status", "fencing_token", "last_activity", "platform_resource_id"])
        event_record(
            Event.Type.ASSIGNMENT_REASSIGNED,
            actor=actor,
            assignment=assignment,
            from_status=from_status,
            to_status=assignment.status,
            data={
                "from_agent_id": from_agent,
                "to_agent_id": assignment.agent.agent_id if assignment.agent_id else None,
                "fencing_token": assignment.fencing_token,
            },
        )
    if handed_at:
        Agent.objects.filter(pk__in=list(handed_at)).update(
            last_assigned_at=Case(*(When(pk=pk, then=Value(at)) for pk, at in handed_at.items()))
        )


# "Does this agent hold anything?", compiled once: asked on every re-registration and drain.
_AGENT_HOLDS_ASSIGNMENTS = CompiledQuery(
    lambda pk: Assignment.objects.filter(agent_id=pk, status__in=Assignment.LIVE_STATUSES),
    sentinels=(-7_000_000_001,), kind=EXISTS,
)


def pool_fail_over(*, agent: Agent, actor: Actor) -> Moves:
    """Move every live assignment of `agent` (stale, draining or deregistered) to a healthy agent of
    its pool chosen by the pool's strategy, or leave it pending with no agent until one is free.
    Assignments that were `releasing` are simply released (a request queued for that profile gets
    it). The agent's own queued requests (waiting for a profile) are cancelled, not moved: they were
    that agent's wish (assignments/waits.py). Emits `assignment.reassigned` for each move (new
    fencing token) and `assignment.released` for each release or cancellation.

    Its assigned and running tasks go back to the queue first (attempt + 1, or failed on their last
    attempt; `pools.queue.tasks_requeue_for_agent`), giving back the profiles they held — so those
    assignments are released, not moved; the dispatcher places the tasks again after commit.

    The caller holds the agent's row lock (taken after its pool's move lock)."""
    moves = Moves()
    now = timezone.now()
    # Nothing to move (a re-registration, a drain of an idle agent): no need to lock and load every
    # agent of the pool, nor even to open a savepoint. The answer holds: every caller holds this
    # agent's row lock (and its pool's move lock), and nothing gives an agent an assignment or a task
    # without locking its row (the dispatcher skips locked agents).
    if not _AGENT_HOLDS_ASSIGNMENTS.exists(agent.pk) and not agent_has_open_tasks(agent.pk):
        return moves
    with recorded_transaction():
        pool_lock_moves(agent.pool_id)
        agents, counts = _lock_candidates(agent.pool_id, extra_pk=agent.pk)
        # Task rows after the agent rows, before profile and assignment rows (the lock order).
        moves.tasks_requeued, moves.tasks_failed = tasks_requeue_for_agent(agent=agent, actor=actor)
        lost = list(
            Assignment.objects.select_for_update(of=("self",))
            .filter(agent_id=agent.pk, status__in=Assignment.LIVE_STATUSES)
            .select_related("profile", "pool", "agent")
            .order_by("assigned_at", "pk")
        )
        if not lost:
            return moves
        to_move = []
        for assignment in lost:
            if assignment.status == Assignment.Status.PENDING:
                moves.cancelled.append(wait_cancel(assignment=assignment, actor=actor, reason="agent lost", now=now))
            elif assignment.status == Assignment.Status.RELEASING:
                moves.released.append(
                    assignment_release(
                        assignment_id=assignment.assignment_id,
                        actor=actor,
                        reason=Assignment.ReleaseReason.AGENT_LOST,
                    )
                )
            else:
                to_move.append(assignment)
        if not to_move:
            return moves
        pool = to_move[0].pool
        plan = plan_moves(
            [Work(key=a.pk, region=a.profile.region) for a in to_move],
            _candidates(agents, counts, exclude=agent.pk),
            strategy=pool.strategy,
            min_health_score=pool.min_health_score,
            now=now,
        )
        _apply_plan(plan, {a.pk: a for a in to_move}, agents, actor=actor, now=now, moves=moves)
        if moves.waiting:
            _alert_waiting(pool, len(moves.waiting), lost_agent_id=agent.agent_id)
    return moves


def _alert_waiting(pool: AgentPool, waiting: int, *, lost_agent_id: str) -> None:
    """Work is waiting with no agent to hold it: operators must add or revive agents of the pool."""
    alert_raise(
        kind=Alert.Kind.POOL_NO_HEALTHY_AGENT,
        severity=Alert.Severity.CRITICAL,
        actor=ALERTS_ACTOR,
        message=f"pool {pool.name}: {waiting} assignment(s) of agent {lost_agent_id} wait with no healthy agent with room",
        dedup_key=alert_key_pool_no_healthy_agent(pool.name),
        pool=pool.name,
        data={"waiting": waiting, "lost_agent_id": lost_agent_id},
    )


def _resolve_waiting_alert(pool: AgentPool) -> None:
    alert_resolve(actor=ALERTS_ACTOR, dedup_key=alert_key_pool_no_healthy_agent(pool.name),
                  reason="no assignment of the pool is waiting for an agent any more")


def pool_rebalance(*, pool: AgentPool, actor: Actor, limit: int = 100) -> Moves:
    """Give assignments waiting for an agent (`Assignment.objects.waiting()`) to free, healthy agents
    of the pool, oldest first, at most `limit` per call. Waiting ones claimed by a concurrent pass are
    skipped. Emits `assignment.reassigned` for each one placed; when none waits any more, resolves
    the pool's `pool_no_healthy_agent` alert (`alert.resolved`)."""
    moves = Moves()
    now = timezone.now()
    with recorded_transaction():
        # The move lock before anything is read, even when nothing seems to wait: a failover raises
        # the pool's "no healthy agent" alert under this lock in the transaction that leaves work
        # waiting. Read without it, "nothing waits" could be from before that failover committed,
        # and its fresh alert would be resolved while its work still waits.
        pool_lock_moves(pool.pk)
        waiting_ids = list(
            Assignment.objects.waiting().filter(pool=pool)
            .order_by("assigned_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not waiting_ids:
            _resolve_waiting_alert(pool)
            return moves
        agents, counts = _lock_candidates(pool.pk)
        candidates = _candidates(agents, counts)
        if not any(c.has_room and c.health_score >= pool.min_health_score for c in candidates):
            return moves
        # SKIP LOCKED: another worker rebalancing the same pool takes the rows this one cannot.
        waiting = list(
            Assignment.objects.waiting().select_for_update(of=("self",), skip_locked=True)
            .filter(pk__in=waiting_ids)
            .select_related("profile", "pool")
            .order_by("assigned_at", "pk")
        )
        plan = [
            (work, chosen)
            for work, chosen in plan_moves(
                [Work(key=a.pk, region=a.profile.region) for a in waiting],
                candidates,
                strategy=pool.strategy,
                min_health_score=pool.min_health_score,
                now=now,
            )
            if chosen is not None
        ]
        if plan:
            _apply_plan(plan, {a.pk: a for a in waiting}, agents, actor=actor, now=now, moves=moves)
            if not Assignment.objects.waiting().filter(pool=pool).exists():
                _resolve_waiting_alert(pool)
    return moves


# "Is there anything for a rebalance of this pool to do?": work waiting for an agent, or its "no
# healthy agent" alert still unresolved. One statement, compiled once.
_REBALANCE_WORK = CompiledQuery(
    lambda pk, key: AgentPool.objects.filter(
        Q(Exists(Assignment.objects.waiting().filter(pool=OuterRef("pk"))))
        | Q(Exists(Alert.objects.filter(dedup_key=key, status__in=Alert.UNRESOLVED_STATUSES))),
        pk=pk,
    ),
    sentinels=(-7_000_000_001, "\x00alert-key-slot"), kind=EXISTS,
)


def pool_rebalance_after_join(*, pool: AgentPool, actor: Actor) -> Moves:
    """`pool_rebalance` for a caller that has just committed an agent's joining the pool (its
    registration) in a transaction that held the pool's move lock: it first asks, in one unlocked
    statement, whether anything waits or the pool's alert is open, and does nothing when neither
    (a registration's usual case: six statements and a transaction saved). Unlocked is enough here:
    a failover that left work waiting either committed before that transaction took the move lock —
    and is seen now — or took the lock after it and saw the new agent among its candidates."""
    if not _REBALANCE_WORK.exists(pool.pk, alert_key_pool_no_healthy_agent(pool.name)):
        return Moves()
    return pool_rebalance(pool=pool, actor=actor)


# Events after which an assignment no longer holds room on its agent.
_FREEING_EVENTS = {Event.Type.ASSIGNMENT_RELEASED, Event.Type.ASSIGNMENT_EXPIRED}


def _frees_room(event: dict) -> bool:
    if not event.get("agent_id") or not event.get("assignment_id"):
        return False
    return event["type"] in _FREEING_EVENTS or (
        event["type"] == Event.Type.ASSIGNMENT_STATUS_CHANGED and event.get("to_status") == Assignment.Status.FAILED
    )


# Its probe, on every release (the hot path): compiled once from the one definition of "waiting".
_ANY_WAITING = CompiledQuery(
    lambda name: Assignment.objects.waiting().filter(pool__name=name), sentinels=("\x00pool-slot",), kind=EXISTS
)


def pools_rebalance_freed(payloads: list[dict]) -> None:
    """Event consumer (settings.TETHER_EVENT_CONSUMERS), after commit: an assignment that ended freed
    room on its agent, so give that room to its pool's waiting assignments — only when there are any
    (one indexed query per pool), so a release stays cheap. The release has committed; if this
    fails, the rebalance sweep catches up."""
    pool_names = sorted({event["pool"] for event in payloads if event.get("pool") and _frees_room(event)})
    if not pool_names:
        return
    waiting = [name for name in pool_names if _ANY_WAITING.exists(name)]
    if not waiting:
        return
    for pool in AgentPool.objects.filter(name__in=waiting).order_by("pk"):
        pool_rebalance(pool=pool, actor=Actor.system("rebalance"))
