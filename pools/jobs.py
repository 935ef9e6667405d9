"""The pools app's sweeps, run on the beat by config/jobs.py: rebalancing (waiting assignments to
free agents) and finishing interrupted drains; placing queued tasks, expiring tasks past their
deadline, requeueing tasks of lost agents. Idempotent, bounded by `limit`, safe on several
workers at once; it changes nothing itself, only through the services."""

from django.db.models import Count, F
from django.utils import timezone

from agents.models import Agent
from agents.services import agent_drain
from assignments.models import Assignment, live_q
from config.actors import Actor, require_operator
from pools.dispatch import tasks_place
from pools.models import AgentPool, Task
from pools.queue import agent_tasks_requeue, task_expire
from pools.services import pool_rebalance


def _pool_has_room(pool: AgentPool) -> bool:
    live = Count("assignments", filter=live_q("assignments__"))
    return (
        Agent.objects.filter(pool=pool, status=Agent.Status.ACTIVE, health_score__gte=pool.min_health_score)
        .annotate(live=live)
        .filter(live__lt=F("capacity"))
        .exists()
    )


def pools_rebalance_all(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """The rebalancing sweep: every pool with assignments waiting for an agent gets a
    `pool_rebalance` pass (at most `limit` placed per pool); then any agent left `draining` is
    drained to the end (`agent_drain`: its assignments move away, it becomes inactive with
    `agent.drained`) — `agent_drain` normally does that at once, this only finishes an interrupted one.
    Idempotent; safe on several workers (`pool_rebalance` takes the pool's move lock and skips
    claimed rows). Returns the counts."""
    require_operator(actor, "rebalance pools")

    # One indexed query ((pool, status)) when nothing waits.
    pool_ids = list(
        Assignment.objects.waiting()
        .values_list("pool_id", flat=True)
        .distinct()
        .order_by()
    )
    placed = 0
    for pool in AgentPool.objects.filter(pk__in=pool_ids).order_by("pk"):
        # Without locks first: a pool whose agents are all full (the usual state of a busy pool
        # with a queue) costs one query, not a lock on every agent row; a release or registration
        # rebalances it as soon as room appears, and the next sweep catches a room this read missed.
        if _pool_has_room(pool):
            placed += len(pool_rebalance(pool=pool, actor=actor, limit=limit).moved)
    drained = 0
    for agent_id in Agent.objects.filter(status=Agent.Status.DRAINING).values_list("agent_id", flat=True)[:limit]:
        agent_drain(agent_id=agent_id, actor=actor)
        drained += 1
    return {"placed": placed, "pools": len(pool_ids), "drained": drained}


# --- Tasks ------------------------------------------------------------------------------------------


def tasks_place_all(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """The placement sweep: queued tasks of every pool go to eligible agents by the pool's strategy
    (`tasks_place`, at most `limit` per pool) — catching what submit, freed slots and registrations
    did not place at once. Safe on several workers: placers skip rows another one holds."""
    require_operator(actor, "place tasks")
    pool_ids = list(Task.objects.queued().values_list("pool_id", flat=True).distinct().order_by())
    placed = 0
    for pool in AgentPool.objects.filter(pk__in=pool_ids).order_by("pk"):
        placed += len(tasks_place(pool=pool, actor=actor, limit=limit))
    return {"placed": placed, "pools": len(pool_ids)}


def tasks_expire_overdue(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Queued or assigned tasks past their deadline (not started by then) become `expired`.
    Idempotent: `task_expire` checks again under the row lock."""
    now = now or timezone.now()
    due = list(
        Task.objects.filter(status__in=[Task.Status.QUEUED, Task.Status.ASSIGNED], deadline__lt=now)
        .order_by("deadline").values_list("task_id", flat=True)[:limit]
    )
    expired = 0
    for task_id in due:
        if task_expire(task_id=task_id, actor=actor, now=now).status == Task.Status.EXPIRED:
            expired += 1
    return {"expired": expired, "checked": len(due)}


def tasks_requeue_lost(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """Assigned or running tasks of agents that are stale, draining or inactive go back to the queue
    (failover does it at once; this catches what an interrupted failover left)."""
    agent_ids = list(
        Task.objects.filter(status__in=Task.HELD_STATUSES)
        .exclude(agent__status__in=[Agent.Status.ACTIVE, Agent.Status.BUSY])
        .values_list("agent__agent_id", flat=True).distinct().order_by()[:limit]
    )
    requeued = failed = 0
    for agent_id in agent_ids:
        back, dead = agent_tasks_requeue(agent_id=agent_id, actor=actor)
        requeued, failed = requeued + len(back), failed + len(dead)
    return {"requeued": requeued, "failed": failed}
