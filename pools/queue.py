"""Every write to a Task but its placement (pools/dispatch.py): submit, start, complete, fail,
cancel, expire, requeue, and clearing a queue. One transaction each, with its event rows, each status
change checked against `TASK_TRANSITIONS` (pools/models.py).

Lock order (config/locks.py): pool move lock → agent rows → task rows → profile rows → assignment
rows → alert rows → event lock. A task that holds a profile gives its assignment back when it ends
or goes back to the queue (`assignment_release`, which locks only the assignment row).
"""

from datetime import datetime, timedelta
from uuid import uuid4

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent
from assignments.events import event_record, recorded_transaction
from assignments.models import Assignment, Event, Profile
from assignments.services import assignment_release
from config.actors import Actor, require_operator
from config.errors import Conflict, Forbidden, InvalidTransition, NotFound, StaleFencingToken, ValidationFailed
from config.locks import lock_one, pool_lock_moves
from config.sql import EXISTS, CompiledQuery, sql_insert, sql_update
from config.validation import (
    clean_choice,
    clean_identifier,
    clean_int,
    clean_json_object,
    clean_string_list,
    clean_text,
)
from pools.models import TASK_TRANSITIONS, AgentPool, Task
from pools.selectors import pool_by_name

T = Task.Status
MAX_ERROR_CHARS = 2000
# Path words under /api/tasks/ that a task id would hide.
RESERVED_TASK_IDS = frozenset({"submit", "batch", "status", "queues"})
_REQUIREMENT_KEYS = {"capabilities", "tags", "agent_type", "region", "profile_id", "profile_requirements"}


# --- Input ----------------------------------------------------------------------------------------


def clean_requirements(value) -> dict:
    """A task's requirements, normalised: only the keys given, each checked."""
    value = clean_json_object("requirements", value)
    unknown = set(value) - _REQUIREMENT_KEYS
    if unknown:
        raise ValidationFailed(
            f"unknown requirements: {', '.join(sorted(unknown))}",
            details={"requirements": {k: ["unknown requirement"] for k in sorted(unknown)}},
        )
    if "profile_requirements" in value:
        # Choosing a profile by its tags and region is being built with `POST /api/assignments`
        # (DESIGN.md, "Choosing a profile"); until then a task must name its profile.
        raise ValidationFailed(
            "requirements.profile_requirements is not supported yet: name the profile with requirements.profile_id",
            details={"requirements": {"profile_requirements": ["not supported yet"]}},
        )
    cleaned = {}
    if "capabilities" in value:
        cleaned["capabilities"] = sorted(set(clean_string_list("requirements.capabilities", value["capabilities"])))
    if "tags" in value:
        cleaned["tags"] = sorted(set(clean_string_list("requirements.tags", value["tags"])))
    if value.get("agent_type"):
        cleaned["agent_type"] = clean_choice("requirements.agent_type", value["agent_type"], Agent.AgentType)
    if value.get("region"):
        cleaned["region"] = clean_text("requirements.region", value["region"], max_length=64)
    if value.get("profile_id"):
        cleaned["profile_id"] = clean_identifier("requirements.profile_id", value["profile_id"])
    return cleaned


def _clean_deadline(value, now) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationFailed("deadline must be a date and time with a time zone", details={"deadline": ["not a datetime"]})
    if value <= now:
        raise ValidationFailed("deadline is in the past", details={"deadline": ["in the past"]})
    return value


def _clean_task_id(value) -> str | None:
    if value is None:
        return None
    task_id = clean_identifier("task_id", value)
    if task_id.lower() in RESERVED_TASK_IDS:
        raise ValidationFailed(f"task_id {task_id!r} is reserved (it names an API path)", details={"task_id": ["reserved"]})
    return task_id


def _pool_named(name) -> AgentPool:
    if not isinstance(name, str):
        raise ValidationFailed("pool must be a pool name", details={"pool": ["not a pool name"]})
    pool = pool_by_name(name)  # a statement built once
    if pool is None:
        raise ValidationFailed(f"pool {name[:64]!r} does not exist", details={"pool": ["unknown pool"]})
    return pool


def _build(fields: dict, *, actor: Actor, now, pools: dict) -> Task:
    """One checked, unsaved Task from submitted fields (the API has checked the shape; this checks
    the values again, so every caller refuses the same bad input)."""
    unknown = set(fields) - {"task_id", "pool", "priority", "requirements", "payload", "max_attempts", "deadline"}
    if unknown:
        raise ValidationFailed(
            f"unknown task fields: {', '.join(sorted(unknown))}", details={f: ["unknown field"] for f in unknown}
        )
    if "pool" not in fields:
        raise ValidationFailed("pool is required", details={"pool": ["required"]})
    pool_name = fields["pool"]
    pool = pools.get(pool_name) if isinstance(pool_name, str) else None
    if pool is None:
        pool = pools[pool_name] = _pool_named(pool_name)
        _require_submitter(actor, pool)  # once per pool of a batch
    priority = clean_choice("priority", fields.get("priority", Task.Priority.NORMAL), Task.Priority)
    requirements = clean_requirements(fields.get("requirements"))
    max_attempts = clean_int("max_attempts", fields.get("max_attempts", 3), minimum=1, maximum=100)
    task_id = _clean_task_id(fields.get("task_id"))
    return Task(
        task_id=task_id or str(uuid4()),
        pool=pool,
        priority=priority,
        queue_order=queue_order(priority, now),
        requirements=requirements,
        req_capabilities=requirements.get("capabilities", []),
        req_tags=requirements.get("tags", []),
        req_agent_type=requirements.get("agent_type", ""),
        req_region=requirements.get("region", ""),
        req_profile_id=requirements.get("profile_id", ""),
        payload=clean_json_object("payload", fields.get("payload")),
        status=T.QUEUED,
        attempt=1,
        max_attempts=max_attempts,
        deadline=_clean_deadline(fields.get("deadline"), now),
        submitted_at=now,
        submitted_by=str(actor),
    )


def queue_order(priority: str, submitted_at: datetime) -> datetime:
    """When a task is due in its queue: one aging period later per level below `urgent`. Ordering by
    it serves higher priorities first, the oldest first within one, and lets a task that has waited
    one period longer than another overtake it by one level — so `low` never starves."""
    return submitted_at + timedelta(seconds=Task.PRIORITY_RANK[priority] * settings.TETHER_TASK_AGING_SECONDS)


# "Is this agent in this pool?", built once (config/sql.py): asked at every submit by an agent.
_AGENT_IN_POOL = CompiledQuery(
    lambda agent_id, pool_id: Agent.objects.filter(agent_id=agent_id, pool_id=pool_id),
    sentinels=("\x00agent-slot", -7_000_000_001), kind=EXISTS,
)
# "Is this task id taken?" for a submit of one task (a batch asks for its ids at once).
_TASK_ID_TAKEN = CompiledQuery(
    lambda task_id: Task.objects.filter(task_id=task_id), sentinels=("\x00task-slot",), kind=EXISTS
)


def _require_submitter(actor: Actor, pool: AgentPool) -> None:
    """Operators submit to any pool; an agent only to its own pool."""
    if actor.is_operator:
        return
    if actor.is_agent and _AGENT_IN_POOL.exists(actor.name, pool.pk):
        return
    raise Forbidden(f"{actor} may not submit tasks to pool {pool.name!r}: operators and the pool's agents may",
                    details={"pool": pool.name})


# --- Events and the gate ----------------------------------------------------------------------------


def task_event(type_: str, task: Task, *, actor: Actor, from_status: str = "", to_status: str = "",
               agent_id: str = "", data: dict | None = None) -> None:
    """Record a task event naming the task, its pool, its agent and its priority."""
    event_record(
        type_,
        actor=actor,
        task_id=task.task_id,
        pool_name=task.pool.name,
        agent_id=agent_id or (task.agent.agent_id if task.agent_id else ""),
        from_status=from_status,
        to_status=to_status,
        data={"task_id": task.task_id, "priority": task.priority, "attempt": task.attempt} | (data or {}),
    )


def task_check_transition(task: Task, to_status: str) -> None:
    """The one gate of the task state machine: every write that changes a task's status asks here."""
    TASK_TRANSITIONS.check(task.status, to_status, subject=repr(task.task_id), details={"task_id": task.task_id})


def _transition(task: Task, to_status: str, *, actor: Actor, event_type: str, now, update=(), data=None,
                save: bool = True) -> None:
    """Ask the table, change the status, save (unless `save=False`: the caller saves it with its
    next change, in one UPDATE) and record the event."""
    task_check_transition(task, to_status)
    from_status, agent_id = task.status, (task.agent.agent_id if task.agent_id else "")
    task.status = to_status
    fields = ["status", *update]
    if to_status in Task.TERMINAL_STATUSES:
        task.finished_at = now
        fields.append("finished_at")
    if save:
        # One UPDATE per task per transaction, keeping its agent: PostgreSQL then skips the
        # deferred foreign-key check on the agent row at COMMIT. A second UPDATE of a row this
        # transaction already wrote would run it — a KEY SHARE lock on the agent taken after the
        # event-order lock, which can deadlock against a placer holding that agent's row.
        sql_update(task, fields)  # as save(update_fields=…), the statement built once (config/sql.py)
    task_event(event_type, task, actor=actor, from_status=from_status, to_status=to_status, agent_id=agent_id, data=data)


def _lock_task(task_id) -> Task:
    if not isinstance(task_id, str):
        raise NotFound("no such task", details={"task_id": str(task_id)[:128]})
    try:
        return lock_one(Task, related=("pool", "agent", "assignment"), task_id=task_id)
    except Task.DoesNotExist:
        raise NotFound(f"task {task_id!r} does not exist", details={"task_id": task_id}) from None


def _check_attempt(task: Task, attempt) -> None:
    """`attempt` is the task's fencing token: a call about an earlier attempt is refused."""
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise ValidationFailed("attempt must be an integer (the task's current attempt)", details={"attempt": ["not an integer"]})
    if attempt != task.attempt:
        raise StaleFencingToken(
            f"attempt {attempt} of task {task.task_id!r} is not the current one ({task.attempt})"
            + (": the task has been handed out again since" if attempt < task.attempt else ""),
            details={"task_id": task.task_id, "attempt": attempt, "current_attempt": task.attempt},
        )


def _require_holder_or_operator(task: Task, actor: Actor, action: str) -> None:
    if actor.is_operator:
        return
    holder = task.agent.agent_id if task.agent_id else None
    if actor.is_agent and holder == actor.name:
        return
    raise Forbidden(f"{actor} does not hold task {task.task_id!r} and may not {action} it",
                    details={"task_id": task.task_id, "agent_id": holder})


def _give_back_profile(task: Task, *, actor: Actor) -> None:
    """The task's assignment ends with it (or with its attempt): released at once."""
    if task.assignment_id and task.assignment.status in Assignment.LIVE_STATUSES:
        assignment_release(assignment_id=task.assignment.assignment_id, actor=Actor.system("tasks"),
                           reason=Assignment.ReleaseReason.RELEASED)


def _check_profiles(tasks: list[Task]) -> None:
    """A task's profile must exist and may not belong to another pool (it could never be placed)."""
    wanted = {t.req_profile_id for t in tasks if t.req_profile_id}
    if not wanted:
        return
    pools = dict(Profile.objects.filter(profile_id__in=wanted).values_list("profile_id", "pool_id"))
    for task in tasks:
        if not task.req_profile_id:
            continue
        if task.req_profile_id not in pools:
            raise ValidationFailed(f"profile {task.req_profile_id!r} does not exist",
                                   details={"requirements": {"profile_id": ["unknown profile"]}})
        if pools[task.req_profile_id] not in (None, task.pool.pk):
            raise ValidationFailed(f"profile {task.req_profile_id!r} belongs to another pool than {task.pool.name!r}",
                                   details={"requirements": {"profile_id": ["profile of another pool"]}})


# --- Submit -----------------------------------------------------------------------------------------


def task_submit(*, actor: Actor, **fields) -> Task:
    """Queue one task (operators, or an agent of the pool). Emits `task.submitted`; placing it is
    the dispatcher's (after commit, pools/dispatch.py). A task id already used → 409 `conflict`."""
    (task,) = task_submit_batch(actor=actor, tasks=[fields])
    return task


def task_submit_batch(*, actor: Actor, tasks: list[dict]) -> list[Task]:
    """Queue several tasks, all or none. Emits `task.submitted` for each."""
    if not isinstance(tasks, list) or not tasks:
        raise ValidationFailed("tasks must be a non-empty list", details={"tasks": ["empty or not a list"]})
    if len(tasks) > settings.TETHER_TASK_BATCH_MAX:
        raise ValidationFailed(f"at most {settings.TETHER_TASK_BATCH_MAX} tasks per batch", details={"tasks": ["too many"]})
    now = timezone.now()
    pools: dict = {}
    built = []
    for i, fields in enumerate(tasks):
        if not isinstance(fields, dict):
            raise ValidationFailed(f"tasks[{i}] must be an object", details={"tasks": {str(i): ["not an object"]}})
        try:
            built.append(_build(fields, actor=actor, now=now, pools=pools))
        except ValidationFailed as exc:
            if len(tasks) == 1:
                raise
            raise ValidationFailed(f"tasks[{i}]: {exc.message}", details={"tasks": {str(i): exc.details}}) from None
    _check_profiles(built)
    ids = [t.task_id for t in built]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValidationFailed(f"task ids repeat in the batch: {', '.join(duplicates[:10])}",
                               details={"task_id": duplicates[:50]})
    with recorded_transaction():
        if len(ids) == 1:  # the common submit: statements built once
            taken = ids if _TASK_ID_TAKEN.exists(ids[0]) else []
        else:
            taken = sorted(Task.objects.filter(task_id__in=ids).values_list("task_id", flat=True))
        if taken:
            raise Conflict(f"task id already used: {', '.join(taken[:10])}", details={"task_id": taken[:50]})
        try:
            # A concurrent submit of the same id loses here (unique task_id), and nothing is kept.
            with transaction.atomic():
                if len(built) == 1:
                    sql_insert(built[0])
                else:
                    Task.objects.bulk_create(built)
        except IntegrityError:
            raise Conflict("task id already used", details={"task_id": ids[:50]}) from None
        for task in built:
            task_event(Event.Type.TASK_SUBMITTED, task, actor=actor, to_status=T.QUEUED)
    return built


# --- The agent's calls ----------------------------------------------------------------------------


def task_start(*, task_id: str, actor: Actor, attempt) -> Task:
    """The holder starts an assigned task: `running`. Starting a running one again changes nothing.
    Emits `task.started`."""
    with recorded_transaction():
        task = _lock_task(task_id)
        _check_attempt(task, attempt)
        _require_holder_or_operator(task, actor, "start")
        if task.status == T.RUNNING:
            return task
        _start(task, actor=actor, now=timezone.now())
    return task


def _start(task: Task, *, actor: Actor, now, save: bool = True) -> list[str]:
    """assigned → running. With `save=False` (complete or fail right after) the fields to save with
    the next change are returned."""
    task.started_at = now
    _transition(task, T.RUNNING, actor=actor, event_type=Event.Type.TASK_STARTED, now=now, update=["started_at"],
                save=save)
    return [] if save else ["status", "started_at"]


def task_complete(*, task_id: str, actor: Actor, attempt, result=None) -> Task:
    """The holder reports success: `completed` with its `result` (an assigned task is started first).
    Its profile, if it had one, is released. Completing it again changes nothing.
    Emits `task.started` (when it was assigned) and `task.completed`."""
    result = _clean_result(result)
    with recorded_transaction():
        task = _lock_task(task_id)
        _check_attempt(task, attempt)
        if task.status == T.COMPLETED:
            return task
        _require_holder_or_operator(task, actor, "complete")
        now = timezone.now()
        pending = _start(task, actor=actor, now=now, save=False) if task.status == T.ASSIGNED else []
        task.result = result
        _transition(task, T.COMPLETED, actor=actor, event_type=Event.Type.TASK_COMPLETED, now=now,
                    update=sorted({"result", *pending} - {"status"}))
        _give_back_profile(task, actor=actor)
    return task


def _clean_result(result):
    if result is None or isinstance(result, dict):
        return clean_json_object("result", result) if result is not None else None
    return clean_json_object("result", {"value": result})["value"]


def task_fail(*, task_id: str, actor: Actor, attempt, error: str = "", retry: bool = False) -> Task:
    """The holder reports failure. With `retry` and attempts left, the task goes back to the queue
    with attempt + 1 (`task.requeued`); otherwise it is `failed` (`task.failed`), a dead letter an
    operator can see and submit again. An assigned task is started first. Its profile is released."""
    error = _clean_error(error)
    if not isinstance(retry, bool):
        raise ValidationFailed("retry must be true or false", details={"retry": ["not a boolean"]})
    with recorded_transaction():
        task = _lock_task(task_id)
        _check_attempt(task, attempt)
        if task.status == T.FAILED:
            return task
        _require_holder_or_operator(task, actor, "fail")
        now = timezone.now()
        pending = _start(task, actor=actor, now=now, save=False) if task.status == T.ASSIGNED else []
        if task.status != T.RUNNING:
            raise InvalidTransition(f"task {task.task_id!r} is {task.status}, not running",
                                    details={"task_id": task.task_id, "status": task.status})
        _give_back_profile(task, actor=actor)
        task.error = error
        _requeue_or_fail(task, actor=actor, now=now, retry=retry, reason="retry" if retry else "failed",
                         pending=pending)
    return task


def _clean_error(error) -> str:
    """Free text (a traceback may span lines), bounded; no NUL (PostgreSQL cannot store it)."""
    if error is None:
        return ""
    if not isinstance(error, str):
        raise ValidationFailed("error must be a string", details={"error": ["not a string"]})
    if len(error) > MAX_ERROR_CHARS:
        raise ValidationFailed(f"error is longer than {MAX_ERROR_CHARS} characters", details={"error": ["too long"]})
    if "\x00" in error:
        raise ValidationFailed("error contains NUL characters", details={"error": ["NUL character"]})
    return error


def _requeue_or_fail(task: Task, *, actor: Actor, now, retry: bool, reason: str, pending=()) -> None:
    """Back to the queue with attempt + 1 while attempts remain (and `retry`), else `failed`."""
    if retry and task.attempt < task.max_attempts:
        from_agent = task.agent.agent_id if task.agent_id else ""
        task_check_transition(task, T.QUEUED)
        from_status = task.status
        task.status = T.QUEUED
        task.attempt += 1
        task.agent = None
        task.assignment = None
        task.assigned_at = None
        task.started_at = None
        sql_update(task, ["status", "attempt", "agent", "assignment", "assigned_at", "started_at", "error"])
        task_event(Event.Type.TASK_REQUEUED, task, actor=actor, from_status=from_status, to_status=T.QUEUED,
                   agent_id=from_agent, data={"reason": reason, "error": task.error[:200]})
        return
    data = {"reason": reason, "error": task.error[:200]}
    if retry:
        data["attempts_exhausted"] = True
    _transition(task, T.FAILED, actor=actor, event_type=Event.Type.TASK_FAILED, now=now,
                update=sorted({"error", *pending} - {"status"}), data=data)


def tasks_requeue_for_agent(*, agent: Agent, actor: Actor) -> tuple[list[Task], list[Task]]:
    """The agent is lost (stale, drained, deregistered, registered again): its assigned and running
    tasks go back to the queue with attempt + 1 — or fail when that was their last attempt — and
    their profiles are released. The caller holds the agent's row (and its pool's move lock).
    Returns (requeued, failed). Emits `task.requeued` / `task.failed` for each."""
    now = timezone.now()
    requeued, failed = [], []
    with recorded_transaction():
        held = list(
            Task.objects.select_for_update(of=("self",)).filter(agent_id=agent.pk, status__in=Task.HELD_STATUSES)
            .select_related("pool", "agent", "assignment").order_by("pk")
        )
        for task in held:
            _give_back_profile(task, actor=actor)
            task.error = f"agent {agent.agent_id} was lost (attempt {task.attempt})"
            _requeue_or_fail(task, actor=actor, now=now, retry=True, reason="agent_lost")
            (requeued if task.status == T.QUEUED else failed).append(task)
    return requeued, failed


# --- Operators ------------------------------------------------------------------------------------


def task_cancel(*, task_id: str, actor: Actor) -> Task:
    """Operators and the submitter cancel a queued or assigned task (its profile is released).
    Cancelling it again changes nothing; a running or ended task cannot be cancelled (409).
    Emits `task.cancelled`."""
    with recorded_transaction():
        task = _lock_task(task_id)
        if not actor.is_operator and str(actor) != task.submitted_by:
            raise Forbidden(f"only an operator or the submitter may cancel task {task.task_id!r}",
                            details={"task_id": task.task_id})
        if task.status == T.CANCELLED:
            return task
        _give_back_profile(task, actor=actor)
        # The agent it was assigned to stays named: its late calls get 409 invalid_transition.
        _transition(task, T.CANCELLED, actor=actor, event_type=Event.Type.TASK_CANCELLED, now=timezone.now())
    return task


def task_expire(*, task_id: str, actor: Actor, now=None) -> Task:
    """A queued or assigned task not started by its deadline is `expired` (its profile released).
    Others are left as they are. Emits `task.expired`."""
    require_operator(actor, "expire a task")
    now = now or timezone.now()
    with recorded_transaction():
        task = _lock_task(task_id)
        if task.status not in (T.QUEUED, T.ASSIGNED) or task.deadline is None or task.deadline > now:
            return task
        _give_back_profile(task, actor=actor)
        _transition(task, T.EXPIRED, actor=actor, event_type=Event.Type.TASK_EXPIRED, now=now,
                    data={"deadline": task.deadline.isoformat()})
    return task


def queue_clear(*, priority: str, actor: Actor, pool: str | None = None) -> int:
    """Cancel every queued task of one priority (of one pool, or all pools). Tasks a dispatcher is
    placing at this moment are skipped (they are being handed out). Emits `task.cancelled` for each
    and one `queue.cleared`. Returns how many were cancelled."""
    require_operator(actor, "clear a queue")
    priority = clean_choice("priority", priority, Task.Priority)
    pool_obj = None
    if pool is not None:
        pool_obj = AgentPool.objects.filter(name=pool).first() if isinstance(pool, str) else None
        if pool_obj is None:
            raise NotFound(f"pool {str(pool)[:64]!r} does not exist", details={"pool": str(pool)[:64]})
    now = timezone.now()
    with recorded_transaction():
        rows = Task.objects.select_for_update(skip_locked=True, of=("self",)).filter(status=T.QUEUED, priority=priority)
        if pool_obj is not None:
            rows = rows.filter(pool=pool_obj)
        tasks = list(rows.select_related("pool").order_by("pk"))
        for task in tasks:
            task_check_transition(task, T.CANCELLED)
        if tasks:
            Task.objects.filter(pk__in=[t.pk for t in tasks]).update(status=T.CANCELLED, finished_at=now)
        for task in tasks:
            task_event(Event.Type.TASK_CANCELLED, task, actor=actor, from_status=T.QUEUED, to_status=T.CANCELLED,
                       data={"reason": "queue cleared"})
            task.status, task.finished_at = T.CANCELLED, now
        event_record(Event.Type.QUEUE_CLEARED, actor=actor, pool_name=pool_obj.name if pool_obj else "",
                     data={"priority": priority, "pool": pool_obj.name if pool_obj else None, "cleared": len(tasks)})
    return len(tasks)



def agent_tasks_requeue(*, agent_id: str, actor: Actor) -> tuple[list[Task], list[Task]]:
    """Requeue the tasks of an agent that is stale, draining or inactive, if failover left any (the
    sweep's catch-up; failover does it at once). An active or busy agent's tasks are left alone.
    Emits what `tasks_requeue_for_agent` emits."""
    require_operator(actor, "requeue an agent's tasks")
    pool_id = Agent.objects.filter(agent_id=agent_id).values_list("pool_id", flat=True).first()
    if pool_id is None:
        raise NotFound(f"agent {agent_id!r} does not exist", details={"agent_id": agent_id})
    with recorded_transaction():
        # The failover paths' order: the pool's move lock, then the agent row, then task rows.
        pool_lock_moves(pool_id)
        agent = lock_one(Agent, related=("pool",), agent_id=agent_id)
        if agent.status in (Agent.Status.ACTIVE, Agent.Status.BUSY):
            return [], []
        return tasks_requeue_for_agent(agent=agent, actor=actor)


def task_resubmit(*, task_id: str, actor: Actor) -> Task:
    """Operators queue a failed, expired or cancelled task again (a dead letter back to work): a new
    task with a new id, the same pool, priority, requirements, payload and max_attempts, attempt 1.
    The old one stays as it was, for the record. Emits `task.submitted` (data `resubmitted_from`)."""
    require_operator(actor, "resubmit a task")
    old = Task.objects.select_related("pool").filter(task_id=task_id).first() if isinstance(task_id, str) else None
    if old is None:
        raise NotFound(f"task {str(task_id)[:128]!r} does not exist", details={"task_id": str(task_id)[:128]})
    if old.status not in (T.FAILED, T.EXPIRED, T.CANCELLED):
        raise InvalidTransition(f"task {old.task_id!r} is {old.status}: only failed, expired or cancelled tasks "
                                "are resubmitted", details={"task_id": old.task_id, "status": old.status})
    now = timezone.now()
    fields = {"pool": old.pool.name, "priority": old.priority, "requirements": old.requirements,
              "payload": old.payload, "max_attempts": old.max_attempts}
    task = _build(fields, actor=actor, now=now, pools={})
    _check_profiles([task])
    with recorded_transaction():
        task.save(force_insert=True)
        task_event(Event.Type.TASK_SUBMITTED, task, actor=actor, to_status=T.QUEUED,
                   data={"resubmitted_from": old.task_id})
    return task
