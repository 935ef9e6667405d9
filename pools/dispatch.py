"""Placing queued tasks on agents: push by the pool's strategy (`tasks_place`: on submit, when an
agent frees a slot or registers, and on the sweep) and pull by an agent (`task_claim`).

Both follow one rule for handing out a task exactly once, whatever the number of web instances and
workers: the agent row is locked first (it guards the agent's `task_capacity`: every path that hands
it a task holds it), then queued task rows with `SELECT … FOR UPDATE SKIP LOCKED` — a row another
placer holds is skipped, never waited for and never taken twice. Agent rows are locked `FOR NO KEY
UPDATE`: exclusive against every other locker of the row, but not against the foreign-key checks
(`FOR KEY SHARE`) that other transactions run on it at COMMIT, after taking the event-order lock —
a placer holding the agent while waiting for that lock would otherwise deadlock with them. Which agent gets which task is
decided in memory by `pools.balancing.plan_moves` (the six strategies, pure functions).

Lock order (config/locks.py): agent rows → task rows → profile rows (a profile-backed task takes
its assignment through `assignment_create`) → assignment rows → event lock.
"""

import logging

from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from agents.models import Agent
from assignments.events import recorded_transaction
from assignments.models import Assignment, Event
from assignments.services import assignment_create
from config.actors import Actor, require_self_or_operator
from config.errors import NotFound, TetherError
from config.locks import lock_one_named
from config.sql import EXISTS, CompiledQuery, sql_update, sql_update_rows
from pools.balancing import Candidate, Requirements, Work, plan_moves
from pools.models import AgentPool, Task
from pools.queue import task_check_transition, task_event
from pools.selectors import pool_by_name

log = logging.getLogger(__name__)
T = Task.Status
DISPATCH_ACTOR = Actor.system("dispatch")
# How many queued tasks one placement pass looks at, per free slot: enough that tasks no free agent
# can serve (skipped, left queued) do not crowd out those behind them.
_WINDOW_PER_SLOT = 4


def task_capacity(agent: Agent, pool: AgentPool) -> int:
    """Tasks the agent may hold at once: its own `task_capacity`, else its pool's."""
    return agent.task_capacity or pool.task_capacity


def _held_counts(agent_pks: list[int]) -> dict[int, int]:
    """Tasks held by each of these agents (those holding none left out): one statement whatever the
    number of agents on PostgreSQL (`= ANY(%s)`, built once), the ORM's query elsewhere."""
    if connection.vendor != "postgresql":
        return dict(
            Task.objects.filter(agent_id__in=agent_pks, status__in=Task.HELD_STATUSES)
            .values_list("agent_id").annotate(n=Count("pk")).order_by()
        )
    with connection.cursor() as cursor:
        cursor.execute(_HELD_COUNTS_SQL, [list(agent_pks), list(Task.HELD_STATUSES)])
        return dict(cursor.fetchall())


_HELD_COUNTS_SQL = (
    f"SELECT agent_id, COUNT(*) FROM {Task._meta.db_table} "
    "WHERE agent_id = ANY(%s) AND status = ANY(%s) GROUP BY agent_id"
)


# The pool's agents a placement pass may use, locked (skipping those locked elsewhere), built once.
_SLOT_HEALTH = -7_000_000_001.5
_AGENT_FIELDS = tuple(f.name for f in Agent._meta.concrete_fields)
_PLACEABLE_AGENTS = CompiledQuery(
    lambda pool_id, min_health: Agent.objects.select_for_update(skip_locked=True, no_key=True, of=("self",))
    .filter(pool_id=pool_id, status=Agent.Status.ACTIVE, health_score__gte=min_health)
    .order_by("pk").values_list(*_AGENT_FIELDS),
    sentinels=(-7_000_000_001, _SLOT_HEALTH),
)


# The agent's assigned tasks with their assignments' id and fencing token, built once: every claim
# reads them, and a long-polling claim again at every look.
_TASK_FIELDS = tuple(f.name for f in Task._meta.concrete_fields)
_ASSIGNED_TO = CompiledQuery(
    lambda pk: Task.objects.filter(agent_id=pk, status=T.ASSIGNED)
    .values_list(*_TASK_FIELDS, "assignment__assignment_id", "assignment__fencing_token"),
    sentinels=(-7_000_000_001,),
)
_ASSIGNMENT_READ = ("id", "assignment_id", "fencing_token")


def _assigned_to(agent: Agent) -> list[Task]:
    """Its assigned tasks, with `agent`, `pool` and `assignment` (as far as its id and fencing token)
    in place, as `select_related` would have them."""
    tasks = _ASSIGNED_TO.objects(Task, _TASK_FIELDS, agent.pk)
    other_pools = AgentPool.objects.in_bulk({t.pool_id for t in tasks} - {agent.pool_id})  # rare: none
    for task in tasks:
        task.agent = agent
        task.pool = agent.pool if task.pool_id == agent.pool_id else other_pools[task.pool_id]
        if task.assignment_id:
            task.assignment = Assignment.from_db(connection.alias, _ASSIGNMENT_READ,
                                                 [task.assignment_id, *task._extra])
    return tasks


def _candidate(agent: Agent, pool: AgentPool, held: int) -> Candidate:
    def fraction(key):
        value = agent.load_metrics.get(key, 0) if isinstance(agent.load_metrics, dict) else 0
        return value / 100.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    return Candidate(
        key=agent.pk, agent_id=agent.agent_id, health_score=agent.health_score, live=held,
        capacity=task_capacity(agent, pool), weight=agent.weight, priority=agent.priority, region=agent.region,
        cpu=fraction("cpu"), memory=fraction("memory"), last_assigned_at=agent.last_assigned_at,
        agent_type=agent.agent_type, capabilities=frozenset(agent.capabilities or ()), tags=frozenset(agent.tags or ()),
    )


def _needs(task: Task) -> Requirements:
    return Requirements(capabilities=frozenset(task.req_capabilities or ()), tags=frozenset(task.req_tags or ()),
                        agent_type=task.req_agent_type, region=task.req_region)


def _servable_q(agent: Agent) -> Q:
    """Queued tasks this agent meets the requirements of, in SQL. JSON containment is PostgreSQL's
    (`<@`); on SQLite (embedded mode) capabilities and tags are checked in Python after the read."""
    q = Q(req_agent_type__in=["", agent.agent_type]) & Q(req_region__in=["", agent.region])
    if connection.vendor == "postgresql":
        q &= Q(req_capabilities__contained_by=list(agent.capabilities or [])) & Q(
            req_tags__contained_by=list(agent.tags or [])
        )
    return q


def _queued(pool: AgentPool, servable: Q, window: int) -> list[Task]:
    tasks = list(_queued_rows(pool.pk, servable, window))
    for task in tasks:
        task.pool = pool  # the same row for all: no join
    return tasks


def _queued_rows(pool_id: int, servable: Q, window: int):
    # SKIP LOCKED: a task another placer holds right now is being handed out by it — never twice.
    # Tasks waiting for a profile someone holds are left out in SQL, so that any number of them at
    # the head of the queue cannot crowd the tasks behind them out of the window.
    held_profiles = Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES).values("profile__profile_id")
    return (
        Task.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(pool_id=pool_id, status=T.QUEUED).filter(servable)
        .exclude(req_profile_id__in=held_profiles)
        .order_by("queue_order", "pk")[:window]
    )


# A claiming agent's window of the queue (`_queued` with `_servable_q(agent)`), built once per window
# size: an idle agent long-polling for work reads it at every look. PostgreSQL only (the requirement
# filter is SQL there); elsewhere the ORM's query.
_SLOT_POOL, _SLOT_TYPE, _SLOT_REGION = -7_000_000_001, "\x00agent-type-slot", "\x00region-slot"
_SLOT_CAPABILITIES, _SLOT_TAGS = ["\x00capabilities-slot"], ["\x00tags-slot"]
_QUEUED_FOR: dict[int, CompiledQuery] = {}


def _queued_for(agent: Agent, pool: AgentPool, window: int) -> list[Task]:
    """`_queued(pool, _servable_q(agent), window)`, its statement built once per window size."""
    if connection.vendor != "postgresql":
        return _queued(pool, _servable_q(agent), window)
    query = _QUEUED_FOR.get(window)
    if query is None:
        def build(pool_id, agent_type, region, capabilities, tags):
            servable = _servable_q(Agent(agent_type=agent_type, region=region, capabilities=capabilities, tags=tags))
            return _queued_rows(pool_id, servable, window).values_list(*_TASK_FIELDS)

        query = _QUEUED_FOR[window] = CompiledQuery(
            build, sentinels=(_SLOT_POOL, _SLOT_TYPE, _SLOT_REGION, _SLOT_CAPABILITIES, _SLOT_TAGS)
        )
    tasks = query.objects(Task, _TASK_FIELDS, pool.pk, agent.agent_type, agent.region,
                          list(agent.capabilities or []), list(agent.tags or []))
    for task in tasks:
        task.pool = pool
    return tasks


_ASSIGNED_FIELDS = ["status", "agent", "assignment", "assigned_at"]


def _assign(task: Task, agent: Agent, *, actor: Actor, now, save: bool = True) -> bool:
    """Hand one locked, queued task to one locked agent. A task that needs a profile gets a fenced
    assignment first; when the profile is not free (or the take is refused), the task stays queued
    and False is returned — it does not hold up the others. With `save=False` the caller writes
    the task (`_ASSIGNED_FIELDS`), with others, in one statement."""
    assignment = None
    if task.req_profile_id:
        if Assignment.objects.filter(profile__profile_id=task.req_profile_id,
                                     status__in=Assignment.LIVE_STATUSES).exists():
            return False  # held: the task waits for it (checked here so a wait records no conflict)
        try:
            assignment = assignment_create(
                profile_id=task.req_profile_id, agent_id=agent.agent_id,
                actor=actor if actor.is_operator else DISPATCH_ACTOR, workflow_id=f"task:{task.task_id}",
            )
        except TetherError as exc:
            log.info("task %s not placed on %s: %s", task.task_id, agent.agent_id, exc.message)
            return False
    task_check_transition(task, T.ASSIGNED)
    task.status = T.ASSIGNED
    task.agent = agent
    task.assignment = assignment
    task.assigned_at = now
    if save:
        sql_update(task, _ASSIGNED_FIELDS)
    data = {"assignment_id": str(assignment.assignment_id), "fencing_token": assignment.fencing_token} if assignment else {}
    task_event(Event.Type.TASK_ASSIGNED, task, actor=actor, from_status=T.QUEUED, to_status=T.ASSIGNED,
               data=data | {"wait_seconds": round((now - task.submitted_at).total_seconds(), 3)})
    return True


def _save_assigned(tasks: list[Task], *, now) -> None:
    """Write a pass's placements: one UPDATE per agent for the tasks without a profile (the rows
    are locked; Django's bulk_update compiles a CASE per row, which profiling showed costs more
    than the statements), one per task with its own assignment."""
    by_agent: dict[int, list[int]] = {}
    for task in tasks:
        if task.assignment_id:
            sql_update(task, _ASSIGNED_FIELDS)
        else:
            by_agent.setdefault(task.agent_id, []).append(task.pk)
    for agent_pk, pks in by_agent.items():
        sql_update_rows(Task, pks, status=T.ASSIGNED, agent=agent_pk, assigned_at=now)


def tasks_place(*, pool: AgentPool, actor: Actor = DISPATCH_ACTOR, limit: int = 200) -> list[Task]:
    """Push: give the pool's queued tasks to eligible agents by the pool's strategy — the task due
    first (priority, then age, with aging) first; a task no free agent can serve is skipped, not
    waited on. Agents: active, health ≥ the pool's minimum, under their task capacity; an agent row
    locked elsewhere (a claim, a heartbeat, a take) is skipped this pass. At most `limit` tasks.
    Emits `task.assigned` for each (and `assignment.created` for a profile-backed one)."""
    now = timezone.now()
    placed: list[Task] = []
    with recorded_transaction():
        agents = {
            a.pk: a for a in _PLACEABLE_AGENTS.objects(Agent, _AGENT_FIELDS, pool.pk, pool.min_health_score)
        }
        if not agents:
            return placed
        held = _held_counts(list(agents))
        candidates = [_candidate(a, pool, held.get(pk, 0)) for pk, a in agents.items()]
        with_room = [c for c in candidates if c.has_room]
        if not with_room:
            return placed
        room = sum(c.capacity - c.live for c in with_room)
        servable = Q(pk__in=[])
        for c in with_room:
            servable |= _servable_q(agents[c.key])
        tasks = _queued(pool, servable, min(limit, room) * _WINDOW_PER_SLOT)
        if not tasks:
            return placed
        plan = plan_moves(
            [Work(key=t.pk, needs=_needs(t)) for t in tasks], candidates,
            strategy=pool.strategy, min_health_score=pool.min_health_score, now=now,
        )
        by_pk = {t.pk: t for t in tasks}
        for work, chosen in plan:
            if chosen is None or len(placed) >= limit:
                continue
            agent = agents[chosen.key]
            agent.pool = pool
            if _assign(by_pk[work.key], agent, actor=actor, now=now, save=False):
                placed.append(by_pk[work.key])
        if placed:
            _save_assigned(placed, now=now)
            sql_update_rows(Agent, sorted({t.agent_id for t in placed}), last_assigned_at=now)
    return placed


def task_claim(*, agent_id: str, actor: Actor, max_tasks: int = 1) -> list[Task]:
    """Pull: the tasks assigned to the agent and not started, highest priority first (at most
    `max_tasks`) — after placing on it, if it is eligible and has room, the queued tasks due first
    whose requirements it meets. Emits `task.assigned` for each newly placed."""
    require_self_or_operator(actor, agent_id, "claim tasks")
    now = timezone.now()
    with recorded_transaction():
        # The agent's row first: it guards the agent's task capacity against concurrent claims.
        # With its pool, in one statement built once (config/locks.py), read as the lock lets it.
        try:
            agent = lock_one_named(Agent, related="pool", only=None, no_key=True, agent_id=agent_id)
        except Agent.DoesNotExist:
            raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id}) from None
        pool = agent.pool
        if agent.status == Agent.Status.ACTIVE and agent.health_score >= pool.min_health_score:
            held = _held_counts([agent.pk]).get(agent.pk, 0)  # built once: every look of a long-poll asks
            room = min(task_capacity(agent, pool) - held, max_tasks)
            if room > 0:
                me = _candidate(agent, pool, held)
                for task in _queued_for(agent, pool, room * _WINDOW_PER_SLOT):
                    if room <= 0:
                        break
                    if _needs(task).met_by(me) and _assign(task, agent, actor=actor, now=now):
                        room -= 1
        mine = _assigned_to(agent)
    mine.sort(key=lambda t: (Task.PRIORITY_RANK[t.priority], t.queue_order, t.pk))
    return mine[:max_tasks]


# Events after which queued tasks of the pool may find an agent.
_TRIGGERS = frozenset({
    Event.Type.TASK_SUBMITTED, Event.Type.TASK_REQUEUED, Event.Type.TASK_COMPLETED, Event.Type.TASK_FAILED,
    Event.Type.TASK_CANCELLED, Event.Type.TASK_EXPIRED, Event.Type.AGENT_REGISTERED, Event.Type.AGENT_UPDATED,
    Event.Type.POOL_UPDATED,
})


def _frees_or_queues(event: dict) -> bool:
    if event["type"] in _TRIGGERS:
        return True
    return event["type"] == Event.Type.AGENT_STATUS_CHANGED and event.get("to_status") == Agent.Status.ACTIVE


def tasks_dispatch_for_events(payloads: list[dict]) -> None:
    """Event consumer (settings.TETHER_EVENT_CONSUMERS): after a commit that queued a task or freed
    an agent's task slot, place the queued tasks of those pools. One query when none is queued."""
    names = sorted({e["pool"] for e in payloads if e.get("pool") and _frees_or_queues(e)})
    queued = [name for name in names if _QUEUED_IN_POOL.exists(name)]
    if not queued:
        return
    pools = [pool for pool in (pool_by_name(name) for name in queued) if pool is not None]
    for pool in sorted(pools, key=lambda p: p.pk):
        tasks_place(pool=pool, actor=DISPATCH_ACTOR)


# "Does the pool have a queued task?", built once (config/sql.py): asked after every registration and
# every finished task, and nearly always answered no — compiling it cost more than asking it.
_QUEUED_IN_POOL = CompiledQuery(
    lambda name: Task.objects.filter(pool__name=name, status=T.QUEUED), sentinels=("\x00pool-slot",), kind=EXISTS
)
