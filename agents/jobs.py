"""The agents app's sweep, run on the beat by config/jobs.py: agents that missed their pool's
heartbeat timeout are marked stale (and their work fails over) through `agent_mark_stale`.
Idempotent, bounded by `limit`, safe on several workers at once."""

from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent
from agents.services import agent_mark_stale
from assignments.events import recorded_transaction
from config.actors import Actor, require_operator
from config.locks import pool_lock_moves
from pools.selectors import older_than_pool_timeout

_MAY_GO_STALE = (Agent.Status.ACTIVE, Agent.Status.BUSY, Agent.Status.DRAINING)


def _overdue_agents(now):
    """Agents that may go stale and whose last heartbeat (or registration, if none) is older than
    their pool's `heartbeat_timeout_seconds`."""
    return older_than_pool_timeout(
        Agent.objects.filter(status__in=_MAY_GO_STALE).annotate(_seen=Coalesce("last_heartbeat", "registered_at")),
        since_field="_seen",
        timeout_field="heartbeat_timeout_seconds",
        now=now,
    )


def agents_mark_overdue_stale(*, actor: Actor, now=None, limit: int = 200) -> dict:
    """The staleness sweep: every agent (at most `limit`) whose last heartbeat is older than its
    pool's heartbeat timeout goes through `agent_mark_stale` (health drops, its assignments fail over
    inside the pool). Idempotent; safe on several workers. Returns the counts."""
    require_operator(actor, "sweep agents")
    now = now or timezone.now()
    marked = []
    # One indexed query ((status, last_heartbeat)) when there is nothing to do.
    overdue = _overdue_agents(now)
    due = list(overdue.order_by("_seen").values_list("pk", "pool_id", "agent_id")[:limit])
    for pk, pool_id, agent_id in due:
        with recorded_transaction():
            # The pool's move lock first, then the agent row (the order every failover path keeps),
            # and the overdue condition again under the row lock: an agent that heartbeated since
            # the query above is left alone; one another worker marked already is no longer due.
            pool_lock_moves(pool_id)
            still_due = overdue.select_for_update(of=("self",)).filter(pk=pk, pool_id=pool_id).exists()
            if not still_due:
                continue
            agent_mark_stale(agent_id=agent_id, actor=actor, reason="missed heartbeats")
            marked.append(agent_id)
    return {"marked_stale": len(marked)}
