"""Every write to an Agent goes through here: one transaction each, with its event rows, each
status change checked against `AGENT_TRANSITIONS` (registration included)."""

import json
from dataclasses import dataclass, field
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.health import health_score
from agents.models import AGENT_TRANSITIONS, REGISTRATION_ONLY, Agent
from assignments.alerts import ALERTS_ACTOR, alert_key_agent_stale, alert_raise, alert_resolve
from assignments.events import event_record, recorded_transaction
from assignments.models import Alert, Assignment, Event
from assignments.selectors import AGENT_LIVE, AGENT_LIVE_FIELDS
from assignments.services import assignment_release
from config.actors import Actor, require_operator, require_self_or_operator
from config.errors import Conflict, Forbidden, InvalidTransition, NotFound
from config.locks import lock_one, lock_one_named, pool_lock_moves
from config.sql import split_value_and_rows, sql_insert_if_absent, sql_update, value_and_rows
from config.tokens import token_new
from config.validation import (
    clean_choice,
    clean_fields,
    clean_float,
    clean_identifier,
    clean_int,
    clean_json_object,
    clean_load_metrics,
    clean_string_list,
    clean_text,
)
from pools.models import AgentPool
from pools.models import Task
from pools.selectors import agent_open_tasks, agent_open_tasks_probe
from pools.services import pool_fail_over, pool_rebalance, pool_rebalance_after_join

# What an agent (or an operator) may set on an agent, with the check each value must pass.
_WRITABLE_FIELDS = {
    "agent_type": lambda v: clean_choice("agent_type", v, Agent.AgentType),
    "capabilities": lambda v: clean_string_list("capabilities", v),
    "services": lambda v: clean_string_list("services", v),
    "endpoints": lambda v: clean_json_object("endpoints", v),
    "tags": lambda v: clean_string_list("tags", v),
    "metadata": lambda v: clean_json_object("metadata", v),
    "version": lambda v: clean_text("version", v, max_length=64),
    "region": lambda v: clean_text("region", v, max_length=64),
    "capacity": lambda v: clean_int("capacity", v, minimum=1, maximum=10_000),
    "task_capacity": lambda v: None if v is None else clean_int("task_capacity", v, minimum=1, maximum=10_000),
    "weight": lambda v: clean_float("weight", v, minimum=0.0, maximum=1_000.0),
    "priority": lambda v: clean_int("priority", v, minimum=-1_000, maximum=1_000),
    "load_metrics": clean_load_metrics,
}


def agent_clean_fields(fields: dict) -> dict:
    return clean_fields("agent", fields, _WRITABLE_FIELDS)


def _lock_agent(agent_id: str, *, only: tuple[str, ...] = ()) -> Agent:
    try:
        return lock_one(Agent, related=("pool",), only=only, agent_id=agent_id)
    except Agent.DoesNotExist:
        raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id}) from None


def _lock_agent_for_moves(agent_id: str) -> Agent:
    """Lock an agent whose assignments are about to move: its pool's move lock first, then its row
    (the order every failover path keeps; see `config.locks.POOL_MOVES`)."""
    pool_id = Agent.objects.filter(agent_id=agent_id).values_list("pool_id", flat=True).first()
    if pool_id is None:
        raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id})
    pool_lock_moves(pool_id)
    return _lock_agent(agent_id)


def _check_transition(agent: Agent, to_status: str) -> None:
    """The one gate of the agent state machine: every write that changes an agent's status asks here."""
    AGENT_TRANSITIONS.check(agent.status, to_status, subject=repr(agent.agent_id), details={"agent_id": agent.agent_id})


def _set_status(agent: Agent, to_status: str, *, actor: Actor, event_type: str, data: dict | None = None) -> None:
    _check_transition(agent, to_status)
    from_status = agent.status
    agent.status = to_status
    agent.save(update_fields=["status"])
    event_record(event_type, actor=actor, agent=agent, from_status=from_status, to_status=to_status, data=data)
    if from_status == Agent.Status.STALE:
        # Revived, drained or gone: the stale condition is over either way.
        alert_resolve(actor=ALERTS_ACTOR, dedup_key=alert_key_agent_stale(agent.agent_id),
                      reason=f"agent is {to_status}")


def agent_register(*, pool: AgentPool, agent_id: str, actor: Actor, **fields) -> tuple[Agent, str]:
    """Register an agent, or register it again (idempotent by `agent_id`): it becomes active with a
    fresh API token, which is returned once and replaces any earlier one.

    Registering again starts a new incarnation of the agent: the old token stops working, so whatever
    process held the agent's live assignments can no longer prove it holds them — they fail over
    inside the pool with new fencing tokens (invariant 5), and the new incarnation picks up what the
    pool gives it through its heartbeat. (Otherwise anyone with the pool's enrollment token could
    re-key a live sibling and leave two processes driving its profiles.)

    Accepts any existing agent state; moving to another pool is refused to anyone but an operator
    (Forbidden), and while the agent still holds live assignments. Emits `agent.registered` (with
    `data.reregistered`), the failover's events, then gives waiting assignments of the pool to free
    agents.
    """
    agent_id = clean_identifier("agent_id", agent_id)
    cleaned = agent_clean_fields(fields)
    token, hashed = token_new("agt")
    now = timezone.now()
    with recorded_transaction():
        fresh = Agent(
            agent_id=agent_id, pool=pool, status=Agent.Status.ACTIVE, registered_at=now, last_heartbeat=now,
            token_hash=hashed, **cleaned,
        )
        fresh.health_score = health_score(fresh.load_metrics)
        # A first registration is this one INSERT (built once, config/sql.py). An agent_id that is
        # taken — registered before, or just now by a concurrent first registration, which the
        # INSERT waits for — inserts nothing, and the agent is registered again below.
        created = sql_insert_if_absent(fresh, "agent_id")
        if created:
            # A new agent moves nothing: its joining is ordered against the pool's moves (see
            # `pool_rebalance_after_join`) but not against other agents joining, which would
            # otherwise register one at a time (a fleet starting). Taken after the INSERT: a move
            # in progress cannot see the uncommitted row, so it never waits for it.
            pool_lock_moves(pool.pk, shared=True)
            agent = fresh
        else:
            # Lock order: the pool's move lock before any agent row (registering again may fail over).
            pool_lock_moves(pool.pk)
            try:  # one statement built once, with its pool (compiling the ORM's cost more than running it)
                agent = lock_one_named(Agent, related="pool", only=None, agent_id=agent_id)
            except Agent.DoesNotExist:  # deleted between the two statements
                raise Conflict(f"agent {agent_id!r} was removed while registering; register again",
                               details={"agent_id": agent_id}) from None
            if agent.pool_id != pool.pk and not actor.is_operator:
                # One pool's enrollment token must not take over (and re-key) another pool's agent.
                raise Forbidden(f"agent {agent_id!r} belongs to another pool; an operator may move it",
                                details={"agent_id": agent_id})
        from_status = "" if created else agent.status
        if not created:
            if agent.pool_id != pool.pk and Assignment.objects.filter(
                agent=agent, status__in=Assignment.LIVE_STATUSES
            ).exists():
                raise Conflict(
                    f"agent {agent_id!r} still holds live assignments in pool {agent.pool.name!r}",
                    details={"agent_id": agent_id, "pool": agent.pool.name},
                )
            if from_status != Agent.Status.ACTIVE:
                _check_transition(agent, Agent.Status.ACTIVE)
            for name, value in cleaned.items():
                setattr(agent, name, value)
            agent.pool = pool
            agent.status = Agent.Status.ACTIVE
            agent.token_hash = hashed
            agent.last_heartbeat = now
            agent.health_score = health_score(agent.load_metrics)
            sql_update(agent, [*cleaned, "pool", "status", "token_hash", "last_heartbeat", "health_score"])
            if from_status == Agent.Status.STALE:
                alert_resolve(actor=ALERTS_ACTOR, dedup_key=alert_key_agent_stale(agent_id), reason="agent registered again")
        event_record(
            Event.Type.AGENT_REGISTERED,
            actor=actor,
            agent=agent,
            from_status=from_status,
            to_status=Agent.Status.ACTIVE,
            data={"reregistered": not created, "capacity": agent.capacity},
        )
        if not created:
            pool_fail_over(agent=agent, actor=actor)
    pool_rebalance_after_join(pool=pool, actor=Actor.system("rebalance"))
    return agent, token


def agent_update(*, agent_id: str, actor: Actor, **fields) -> Agent:
    """Change an agent's descriptive fields (capacity, tags, weight...). Any state. Emits `agent.updated`."""
    require_operator(actor, "edit an agent")
    cleaned = agent_clean_fields(fields)
    with recorded_transaction():
        agent = _lock_agent(agent_id)
        changed = {name: value for name, value in cleaned.items() if getattr(agent, name) != value}
        if not changed:
            return agent
        for name, value in changed.items():
            setattr(agent, name, value)
        agent.save(update_fields=list(changed))
        event_record(Event.Type.AGENT_UPDATED, actor=actor, agent=agent, data={"fields": sorted(changed)})
    return agent


@dataclass
class HeartbeatResult:
    agent: Agent
    revoked: list[UUID] = field(default_factory=list)
    assigned: list[UUID] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)  # its assigned and running tasks
    # Profiles whose browser the agent says is running but which it does not hold: stop them.
    stop_profiles: list[str] = field(default_factory=list)


# What a heartbeat reads of the agent it locks (the most frequent request of all); the rest of the
# row (capabilities, endpoints, metadata...) is never touched on this path.
_HEARTBEAT_AGENT = ("agent_id", "status", "last_heartbeat", "load_metrics", "health_score", "pool__name")


# A heartbeat with load metrics (the usual one) locks and updates its agent in one statement: the
# CTE locks the row (waiting for any writer of it) and hands over the previous heartbeat; the
# UPDATE then writes the new one. The pool is not read here (loaded on first touch: only a revival
# needs it), so a pool change committed during the lock wait cannot come back stale.
HEARTBEAT_SQL = """
WITH previous AS (SELECT id, last_heartbeat FROM agents_agent WHERE agent_id = %s FOR UPDATE)
UPDATE agents_agent AS a SET last_heartbeat = %s, load_metrics = %s::jsonb, health_score = %s
FROM previous WHERE a.id = previous.id
RETURNING a.id, a.agent_id, a.pool_id, a.status, previous.last_heartbeat
"""


# A heartbeat reads the agent's live assignments (assignments.selectors.AGENT_LIVE) and renews those
# it reported: on every heartbeat, so named (config/sql.py; compiling cost more than running).
_RENEW_SQL = (
    f"UPDATE {Assignment._meta.db_table} SET last_activity = %s "
    "WHERE agent_id = %s AND assignment_id = ANY(%s) AND status IN (%s, %s)"
)


def _live_and_any_open_task(agent: Agent) -> tuple[list[Assignment], bool | None]:
    """The agent's live assignments (AGENT_LIVE_FIELDS), and on PostgreSQL whether it holds an open
    task, in one statement (the reply's `tasks` needed a round trip of its own after the commit on
    every heartbeat, issue 15). Read under the agent's row lock, in the heartbeat's transaction:
    a task the dispatcher gives this agent locks the agent row too, so it is either seen here or
    placed after this heartbeat (the next one tells it, as before). None: not asked (SQLite)."""
    if connection.vendor != "postgresql":
        return AGENT_LIVE.objects(Assignment, AGENT_LIVE_FIELDS, agent.pk), None
    live_sql, live_params = AGENT_LIVE.sql(agent.pk)
    tasks_sql, tasks_params = agent_open_tasks_probe(agent.pk)
    with connection.cursor() as cursor:
        cursor.execute(value_and_rows(f"EXISTS ({tasks_sql})", live_sql), [*tasks_params, *live_params])
        any_open, live = split_value_and_rows(cursor.fetchall())
    return AGENT_LIVE.objects(Assignment, AGENT_LIVE_FIELDS, rows=live), bool(any_open)


def _renew(agent: Agent, assignment_ids: list, now) -> None:
    if connection.vendor != "postgresql":
        Assignment.objects.filter(
            agent=agent, assignment_id__in=assignment_ids, status__in=(Assignment.Status.ACTIVE, Assignment.Status.IDLE)
        ).update(last_activity=now)
        return
    with connection.cursor() as cursor:
        cursor.execute(_RENEW_SQL, [now, agent.pk, list(assignment_ids), Assignment.Status.ACTIVE, Assignment.Status.IDLE])


def _heartbeat_row(agent_id: str, *, now, metrics: dict) -> tuple[Agent, object]:
    """Lock and update the agent (HEARTBEAT_SQL); return it (other fields deferred) and the
    heartbeat before this one."""
    score = health_score(metrics)
    with connection.cursor() as cursor:
        cursor.execute(HEARTBEAT_SQL, [agent_id, now, json.dumps(metrics), score])
        row = cursor.fetchone()
    if row is None:
        raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id})
    pk, agent_id, pool_pk, status, previous_heartbeat = row
    loaded = {"id": pk, "agent_id": agent_id, "pool_id": pool_pk, "status": status, "load_metrics": metrics,
              "health_score": score, "last_heartbeat": now}
    names = [f.attname for f in Agent._meta.concrete_fields if f.attname in loaded]  # from_db wants model order
    return Agent.from_db(connection.alias, names, [loaded[name] for name in names]), previous_heartbeat


def agent_heartbeat(
    *,
    agent_id: str,
    actor: Actor,
    load_metrics: dict | None = None,
    reported: list[UUID] | None = None,
    running_profiles: list[str] | None = None,
) -> HeartbeatResult:
    """Record that the agent is alive: new load metrics and health score; a stale agent becomes
    active again (`agent.status_changed`). Plain heartbeats emit no event.

    When the agent reports what it holds (`reported`, possibly empty):
    - the activity of the reported assignments it does hold (active, idle) is renewed;
    - `revoked` lists what it reported but must drop (moved to another agent, ended, being released);
    - `assigned` lists live assignments it holds but did not report (given to it by failover), and
      those a revived agent was given back by the rebalance its revival sets off (new fencing token);
    - a `releasing` assignment it no longer reports has been dropped: it becomes `released`;
    - an active or idle one it held at its previous heartbeat and no longer reports is lost: an
      `assignment_lost` alert is raised (`alert.raised`), once per loss.
    `tasks` lists its assigned and running tasks (highest priority first), whatever it reports.

    When the agent reports the profiles whose browser runs on it (`running_profiles`, what its
    launcher says), `stop_profiles` lists those it does not hold — active or idle, by its own
    live assignment — so that a browser Tether did not give it (or has taken back) is stopped
    where it runs, not only in Tether's books.
    """
    metrics = clean_load_metrics(load_metrics) if load_metrics is not None else None
    if running_profiles is not None:
        running_profiles = [clean_identifier("running_profiles", p) for p in running_profiles]
    require_self_or_operator(actor, agent_id, "heartbeat")
    now = timezone.now()
    revived = False
    any_open_task = None  # unknown until read (with the live assignments, on PostgreSQL)
    with recorded_transaction():
        if metrics is not None and connection.vendor == "postgresql":
            agent, previous_heartbeat = _heartbeat_row(agent_id, now=now, metrics=metrics)
        else:
            agent = _lock_agent(agent_id, only=_HEARTBEAT_AGENT)
            previous_heartbeat = agent.last_heartbeat
            update = ["last_heartbeat", "health_score"]
            agent.last_heartbeat = now
            if metrics is not None:
                agent.load_metrics = metrics
                update.append("load_metrics")
            agent.health_score = health_score(agent.load_metrics)
            agent.save(update_fields=update)
        if agent.status == Agent.Status.STALE:
            _set_status(agent, Agent.Status.ACTIVE, actor=actor, event_type=Event.Type.AGENT_STATUS_CHANGED,
                        data={"reason": "heartbeat"})
            revived = True

        result = HeartbeatResult(agent=agent)
        if reported is not None:
            reported_set = set(reported)
            rows, any_open_task = _live_and_any_open_task(agent)
            held = {a.assignment_id: a.status for a in rows}
            renew = [a for a in reported_set if held.get(a) in (Assignment.Status.ACTIVE, Assignment.Status.IDLE)]
            if renew:
                # Filtered on status again: this UPDATE may wait on an expiry sweep's row lock.
                _renew(agent, renew, now)
            result.revoked = [
                a for a in reported if held.get(a) is None or held[a] == Assignment.Status.RELEASING
            ]
            result.assigned = [
                a for a, status in held.items()
                if a not in reported_set and status in (Assignment.Status.ACTIVE, Assignment.Status.IDLE)
            ]
            # Lost: held since before the previous heartbeat (so the agent reported it then, or was
            # told to pick it up in that reply) and still not reported. Raised once per loss.
            if previous_heartbeat is not None:
                lost = [a for a in rows if a.assignment_id in result.assigned and a.last_activity <= previous_heartbeat]
                if lost:
                    _alert_assignments_lost(agent, lost, actor=actor)
            dropped = [a for a, status in held.items() if a not in reported_set and status == Assignment.Status.RELEASING]
            if dropped:
                for assignment_id in dropped:
                    assignment_release(assignment_id=assignment_id, actor=actor)
    if revived:
        moves = pool_rebalance(pool=agent.pool, actor=Actor.system("rebalance"))
        if reported is not None:
            # The reply is built after the rebalance this heartbeat set off: what its failover left
            # waiting may just have come back to this agent (with a new fencing token). Telling it
            # to drop that now and pick it up on the next heartbeat would stop and start a browser.
            _reply_after_rebalance(result, reported, moves)
        any_open_task = None  # read again: the rebalance may have moved tasks too
    result.tasks = agent_open_tasks(agent, any_open=any_open_task)
    if running_profiles:
        result.stop_profiles = _unheld(agent, running_profiles, keep=result.assigned)
    return result


def _unheld(agent: Agent, running: list[str], *, keep: list[UUID]) -> list[str]:
    """The running profiles this agent does not hold (active or idle) — read after the heartbeat's
    own changes, so what it was just given back (`assigned`) is not stopped."""
    held = set(
        Assignment.objects.filter(
            agent=agent, profile__profile_id__in=running,
            status__in=(Assignment.Status.ACTIVE, Assignment.Status.IDLE),
        ).values_list("profile__profile_id", flat=True)
    )
    held |= set(Assignment.objects.filter(assignment_id__in=keep).values_list("profile__profile_id", flat=True))
    return sorted(set(running) - held)


def _reply_after_rebalance(result: HeartbeatResult, reported: list[UUID], moves) -> None:
    back = {a.assignment_id for a in moves.moved if a.agent_id == result.agent.pk}
    if not back:
        return
    result.revoked = [a for a in result.revoked if a not in back]
    # In `assigned` even when reported: the agent must learn its new fencing token.
    result.assigned = [*result.assigned, *sorted(back - set(result.assigned), key=str)]


def _alert_assignments_lost(agent: Agent, lost: list[Assignment], *, actor: Actor) -> None:
    """An agent's heartbeat no longer reports assignments the database says it holds: raise an
    `assignment_lost` alert (`alert_raise`, emits `alert.raised`) for each, once per loss — not again
    while it stays lost (its `last_activity` only moves when the agent reports it again). The
    assignment is left as it is: the reply's `assigned` tells the agent to pick it up again, and if
    it does not, the expiry sweep idles and then expires it."""
    keys = {a.pk: f"assignment_lost:{a.assignment_id}:{a.last_activity.isoformat()}" for a in lost}
    already = set(Alert.objects.filter(dedup_key__in=list(keys.values())).values_list("dedup_key", flat=True))
    fresh = [a.pk for a in lost if keys[a.pk] not in already]
    for assignment in Assignment.objects.filter(pk__in=fresh).select_related("profile", "pool").order_by("pk"):
        alert_raise(
            kind=Alert.Kind.ASSIGNMENT_LOST,
            actor=Actor.system("heartbeat"),
            message=f"agent {agent.agent_id} no longer reports assignment {assignment.assignment_id} "
            f"(profile {assignment.profile.profile_id}) that it holds",
            dedup_key=keys[assignment.pk],
            pool=assignment.pool.name,
            agent_id=agent.agent_id,
            profile_id=assignment.profile.profile_id,
            assignment_id=assignment.assignment_id,
            data={"reported_by": str(actor), "since": assignment.last_activity.isoformat()},
        )


def agent_set_status(*, agent_id: str, status: str, actor: Actor, load_metrics: dict | None = None) -> Agent:
    """An agent says it is `active` or `busy` (busy agents keep their work but get no new work from
    the pool). Draining and leaving have their own services. Emits `agent.status_changed`."""
    clean_choice("status", status, [Agent.Status.ACTIVE, Agent.Status.BUSY])
    metrics = clean_load_metrics(load_metrics) if load_metrics is not None else None
    require_self_or_operator(actor, agent_id, "set the status")
    with recorded_transaction():
        agent = _lock_agent(agent_id)
        if (agent.status, status) in REGISTRATION_ONLY or agent.status == Agent.Status.INACTIVE:
            # A drained or departed agent stays out until it registers again (agents/models.py).
            raise InvalidTransition(
                f"agent {agent_id!r} is {agent.status}; it must register again to take work",
                details={"agent_id": agent_id, "from_status": agent.status, "to_status": status},
            )
        if metrics is not None:
            agent.load_metrics = metrics
            agent.health_score = health_score(metrics)
            agent.save(update_fields=["load_metrics", "health_score"])
        if agent.status != status:
            _set_status(agent, status, actor=actor, event_type=Event.Type.AGENT_STATUS_CHANGED)
    return agent


def agent_mark_stale(*, agent_id: str, actor: Actor, reason: str = "missed heartbeats") -> Agent:
    """An agent that stopped heartbeating (or that an operator declares lost) becomes stale, its
    health score drops, and its live assignments fail over inside its pool (invariant 5).
    Accepts active, busy and draining agents; stale and inactive ones are left as they are.
    Emits `agent.stale`, the failover's events, then `alert.raised` (the agent's `agent_stale` alert).
    Leaving stale (heartbeat, drain, deregister) resolves that alert (`alert.resolved`)."""
    require_operator(actor, "mark an agent stale")
    with recorded_transaction():
        agent = _lock_agent_for_moves(agent_id)
        if agent.status in (Agent.Status.STALE, Agent.Status.INACTIVE):
            return agent
        agent.health_score = min(agent.health_score, settings.TETHER_STALE_HEALTH_SCORE)
        agent.save(update_fields=["health_score"])
        _set_status(agent, Agent.Status.STALE, actor=actor, event_type=Event.Type.AGENT_STALE,
                    data={"reason": reason, "last_heartbeat": agent.last_heartbeat.isoformat() if agent.last_heartbeat else None})
        pool_fail_over(agent=agent, actor=actor)
        alert_raise(
            kind=Alert.Kind.AGENT_STALE,
            severity=Alert.Severity.WARNING,
            actor=ALERTS_ACTOR,
            message=f"agent {agent.agent_id} of pool {agent.pool.name} is stale ({reason})",
            dedup_key=alert_key_agent_stale(agent.agent_id),
            pool=agent.pool.name,
            agent_id=agent.agent_id,
            data={"reason": reason},
        )
    return agent


def agent_drain(*, agent_id: str, actor: Actor) -> Agent:
    """Stop new work for an agent and move its assignments away (invariant 5); with nothing left it
    is inactive. Accepts active, busy, stale and draining agents; an inactive one is left alone.
    Emits `agent.status_changed` (to draining), the failover's events, then `agent.drained`."""
    require_operator(actor, "drain an agent")
    with recorded_transaction():
        agent = _lock_agent_for_moves(agent_id)
        if agent.status == Agent.Status.INACTIVE:
            return agent
        if agent.status != Agent.Status.DRAINING:
            _set_status(agent, Agent.Status.DRAINING, actor=actor, event_type=Event.Type.AGENT_STATUS_CHANGED)
        moved = pool_fail_over(agent=agent, actor=actor)
        _set_status(agent, Agent.Status.INACTIVE, actor=actor, event_type=Event.Type.AGENT_DRAINED,
                    data={"moved": len(moved.moved), "waiting": len(moved.waiting)})
    return agent


def agent_deregister(*, agent_id: str, actor: Actor) -> Agent:
    """The agent leaves: inactive, its token stops working, its assignments fail over.
    Any state (deregistering twice is not an error). Emits `agent.deregistered` and the failover's."""
    require_self_or_operator(actor, agent_id, "deregister")
    with recorded_transaction():
        agent = _lock_agent_for_moves(agent_id)
        if agent.status == Agent.Status.INACTIVE:
            if agent.token_hash:
                agent.token_hash = ""
                agent.save(update_fields=["token_hash"])
            return agent
        agent.token_hash = ""
        agent.save(update_fields=["token_hash"])
        _set_status(agent, Agent.Status.INACTIVE, actor=actor, event_type=Event.Type.AGENT_DEREGISTERED)
        pool_fail_over(agent=agent, actor=actor)
    return agent
