import uuid

from django.db import models
from django.utils import timezone

from config.transitions import StateMachine


class Profile(models.Model):
    """A browser profile (the vendor's id) that at most one agent may drive at a time."""

    profile_id = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=200, blank=True)
    pool = models.ForeignKey(
        "pools.AgentPool", on_delete=models.PROTECT, null=True, blank=True, related_name="profiles"
    )
    tags = models.JSONField(default=list, blank=True)
    region = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    # The last fencing token issued for this profile. Only ever grows (invariant 2).
    fencing_token = models.BigIntegerField(default=0, editable=False)
    # Health from its holders' outcome reports (assignments/profile_health.py): 0–1, recent reports
    # weigh most. `banned` quarantines the profile: not handed out until an operator clears it.
    health_score = models.FloatField(default=1.0, editable=False)
    successes = models.PositiveIntegerField(default=0, editable=False)
    failures = models.PositiveIntegerField(default=0, editable=False)
    captchas = models.PositiveIntegerField(default=0, editable=False)
    bans = models.PositiveIntegerField(default=0, editable=False)
    last_outcome_at = models.DateTimeField(null=True, blank=True, editable=False)
    quarantined = models.BooleanField(default=False, editable=False)
    quarantined_at = models.DateTimeField(null=True, blank=True, editable=False)
    quarantine_reason = models.CharField(max_length=500, blank=True, editable=False)
    # When its last holder let it go: the pool's cooldown counts from here, and selection by
    # requirements prefers the profile released longest ago (never released first).
    last_released_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Takes on `quota_day` (UTC), for the pool's `profile_daily_quota`; reset by the first take of a day.
    quota_day = models.DateField(null=True, blank=True, editable=False)
    quota_takes = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["profile_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fencing_token__gte=0), name="%(app_label)s_%(class)s_fencing_token_not_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(health_score__gte=0.0, health_score__lte=1.0),
                name="%(app_label)s_%(class)s_health_score_in_range",
            ),
        ]
        indexes = [
            # Selection by requirements: free, takeable profiles, released longest ago first.
            models.Index(fields=["last_released_at"], name="profile_last_released_idx"),
        ]

    def __str__(self):
        return self.profile_id


def waiting_q(prefix: str = "") -> models.Q:
    """The one definition of "waiting": a pending assignment with no agent — its agent was lost and
    no agent of the pool had room (invariant 5), so it waits for one. `prefix` reaches it through a
    relation (`"assignments__"` from a pool)."""
    return models.Q(**{f"{prefix}status": "pending", f"{prefix}agent__isnull": True})


def live_q(prefix: str = "") -> models.Q:
    """Live: pending, active, idle or releasing — held, waiting for an agent, or a queued request."""
    return models.Q(**{f"{prefix}status__in": ["pending", "active", "idle", "releasing"]})


def holding_q(prefix: str = "") -> models.Q:
    """The profile's one holder (invariant 1, the partial unique index): held by an agent (active,
    idle, releasing) or the pool's session waiting for an agent (`waiting_q`). A queued request
    (`queued_q`) does not hold the profile: any number of them wait behind its holder."""
    return models.Q(**{f"{prefix}status__in": ["active", "idle", "releasing"]}) | waiting_q(prefix)


def queued_q(prefix: str = "") -> models.Q:
    """The one definition of a queued request: a pending assignment WITH an agent — that agent asked
    for the profile with `wait_seconds` and waits for the PROFILE (assignments/waits.py). Not to be
    confused with `waiting_q` (no agent: the pool's session waits for an AGENT)."""
    return models.Q(**{f"{prefix}status": "pending", f"{prefix}agent__isnull": False})


class AssignmentQuerySet(models.QuerySet):
    def live(self):
        return self.filter(live_q())

    def waiting(self):
        """Waiting for an agent (`waiting_q`)."""
        return self.filter(waiting_q())

    def holding(self):
        """Holding their profile (`holding_q`): at most one per profile."""
        return self.filter(holding_q())

    def queued(self):
        """Queued requests waiting for their profile (`queued_q`)."""
        return self.filter(queued_q())


class Assignment(models.Model):
    """One profile held (or waiting to be held) by one agent of a pool."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        IDLE = "idle", "Idle"
        RELEASING = "releasing", "Releasing"
        RELEASED = "released", "Released"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    class ReleaseReason(models.TextChoices):
        RELEASED = "released", "Released by its agent"
        FORCE_RELEASED = "force_released", "Force-released by an operator"
        AGENT_LOST = "agent_lost", "Agent lost while releasing"
        EXPIRED = "expired", "Expired"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled while waiting"

    LIVE_STATUSES = (Status.PENDING, Status.ACTIVE, Status.IDLE, Status.RELEASING)
    TERMINAL_STATUSES = (Status.RELEASED, Status.FAILED, Status.EXPIRED)
    HELD_STATUSES = (Status.ACTIVE, Status.IDLE, Status.RELEASING)  # an agent is driving the profile

    assignment_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    profile = models.ForeignKey(Profile, on_delete=models.PROTECT, related_name="assignments")
    pool = models.ForeignKey("pools.AgentPool", on_delete=models.PROTECT, related_name="assignments")
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.PROTECT, null=True, blank=True, related_name="assignments"
    )
    workflow_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    assigned_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)
    last_activity = models.DateTimeField(default=timezone.now)
    fencing_token = models.BigIntegerField()
    platform_resource_id = models.CharField(max_length=255, blank=True)
    release_reason = models.CharField(max_length=32, choices=ReleaseReason.choices, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # A request's priority for the pool's `conflict_policy` and `preemption` (null: its agent's).
    priority = models.IntegerField(null=True, blank=True)
    # A queued request (`queued_q`) waits until then, then expires ("wait timeout").
    wait_until = models.DateTimeField(null=True, blank=True)

    objects = AssignmentQuerySet.as_manager()

    class Meta:
        ordering = ["-assigned_at"]
        indexes = [
            models.Index(fields=["status", "last_activity"], name="asg_status_activity_idx"),
            models.Index(fields=["agent", "status"], name="asg_agent_status_idx"),
            models.Index(fields=["pool", "status"], name="asg_pool_status_idx"),
            models.Index(fields=["workflow_id"], name="asg_workflow_idx"),
            # `GET /api/assignments?platform_resource_id=` finds a session by its pod or container.
            models.Index(
                fields=["platform_resource_id"], name="asg_platform_resource_idx",
                condition=~models.Q(platform_resource_id=""),
            ),
            models.Index(fields=["-assigned_at"], name="asg_assigned_at_idx"),
            # The queue of requests waiting for a profile, oldest first (`queued_q`).
            models.Index(
                fields=["profile", "assigned_at"], name="asg_queue_idx",
                condition=models.Q(status="pending", agent__isnull=False),
            ),
            models.Index(
                fields=["wait_until"], name="asg_wait_until_idx",
                condition=models.Q(status="pending", agent__isnull=False),
            ),
        ]
        constraints = [
            # Invariant 1, held by the database itself: at most one assignment holds a profile
            # (`holding_q`: active, idle, releasing, or pending with no agent — the pool's session
            # waiting for an agent), whatever the number of web instances and workers (a partial
            # unique index on both PostgreSQL and SQLite). Queued requests (pending WITH an agent)
            # are outside it: many wait for one profile, and each becomes its holder only through
            # the hand-over (assignments/waits.py), which this same index still guards.
            models.UniqueConstraint(
                fields=["profile"],
                condition=models.Q(status__in=["active", "idle", "releasing"])
                | models.Q(status="pending", agent__isnull=True),
                name="%(app_label)s_%(class)s_one_live_per_profile",
            ),
            # A queued request always has a deadline (`wait_seconds`), so none waits forever.
            models.CheckConstraint(
                condition=~models.Q(status="pending", agent__isnull=False) | models.Q(wait_until__isnull=False),
                name="%(app_label)s_%(class)s_queued_has_deadline",
            ),
            # Someone must be driving an active, idle or releasing assignment.
            models.CheckConstraint(
                condition=~models.Q(status__in=["active", "idle", "releasing"]) | models.Q(agent__isnull=False),
                name="%(app_label)s_%(class)s_held_has_agent",
            ),
            # Every assignment has a token ≥ 1 — but a request that waited for the profile and was
            # not (yet) served, which has none (0, and still its deadline): it gets the profile's
            # next token when it is served, and until then has nothing it could present to the
            # profile as if it were its holder. A held row always has one.
            models.CheckConstraint(
                condition=models.Q(fencing_token__gte=1)
                | (models.Q(fencing_token=0, wait_until__isnull=False) & ~models.Q(status__in=["active", "idle", "releasing"])),
                name="%(app_label)s_%(class)s_fencing_token_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["pending", "active", "idle", "releasing"])
                | models.Q(released_at__isnull=False),
                name="%(app_label)s_%(class)s_terminal_has_released_at",
            ),
        ]

    def __str__(self):
        return f"{self.profile_id}→{self.agent_id or '∅'} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES


# The one table of allowed assignment status transitions (config.transitions: every write asks it).
# Moving an assignment to another agent (failover, rebalancing) goes through it too: to `pending`
# (waiting for an agent) or to `active` under the new agent — `active → active` is that move.
_S = Assignment.Status
ASSIGNMENT_TRANSITIONS = StateMachine("assignment", {
    _S.PENDING: {_S.ACTIVE, _S.RELEASED, _S.FAILED, _S.EXPIRED},
    _S.ACTIVE: {_S.ACTIVE, _S.IDLE, _S.PENDING, _S.RELEASING, _S.RELEASED, _S.FAILED, _S.EXPIRED},
    _S.IDLE: {_S.ACTIVE, _S.PENDING, _S.RELEASING, _S.RELEASED, _S.FAILED, _S.EXPIRED},
    _S.RELEASING: {_S.RELEASED, _S.FAILED, _S.EXPIRED},
    _S.RELEASED: set(),
    _S.FAILED: set(),
    _S.EXPIRED: set(),
})
assignment_can_transition = ASSIGNMENT_TRANSITIONS.allows


class Event(models.Model):
    """The append-only log and audit trail. `seq` is the order subscribers see (invariant 4).

    Ids are the domain's own strings, not foreign keys, so history outlives the rows it names.
    """

    class Type(models.TextChoices):
        ASSIGNMENT_CREATED = "assignment.created"
        ASSIGNMENT_RELEASED = "assignment.released"
        ASSIGNMENT_STATUS_CHANGED = "assignment.status_changed"
        ASSIGNMENT_UPDATED = "assignment.updated"
        ASSIGNMENT_CONFLICT = "assignment.conflict"
        ASSIGNMENT_EXPIRED = "assignment.expired"
        ASSIGNMENT_REASSIGNED = "assignment.reassigned"
        AGENT_REGISTERED = "agent.registered"
        AGENT_UPDATED = "agent.updated"
        AGENT_STATUS_CHANGED = "agent.status_changed"
        AGENT_STALE = "agent.stale"
        AGENT_DRAINED = "agent.drained"
        AGENT_DEREGISTERED = "agent.deregistered"
        POOL_CREATED = "pool.created"
        POOL_UPDATED = "pool.updated"
        PROFILE_CREATED = "profile.created"
        PROFILE_UPDATED = "profile.updated"
        PROFILE_REPORTED = "profile.reported"
        PROFILE_QUARANTINED = "profile.quarantined"
        PROFILE_QUARANTINE_CLEARED = "profile.quarantine_cleared"
        ALERT_RAISED = "alert.raised"
        ALERT_ACKNOWLEDGED = "alert.acknowledged"
        ALERT_RESOLVED = "alert.resolved"
        TASK_SUBMITTED = "task.submitted"
        TASK_ASSIGNED = "task.assigned"
        TASK_STARTED = "task.started"
        TASK_COMPLETED = "task.completed"
        TASK_FAILED = "task.failed"
        TASK_REQUEUED = "task.requeued"
        TASK_EXPIRED = "task.expired"
        TASK_CANCELLED = "task.cancelled"
        QUEUE_CLEARED = "queue.cleared"

    seq = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=64, db_index=True)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=200)
    assignment_id = models.UUIDField(null=True, blank=True, db_index=True)
    profile_id = models.CharField(max_length=128, blank=True)
    agent_id = models.CharField(max_length=128, blank=True)
    pool = models.CharField(max_length=64, blank=True)
    task_id = models.CharField(max_length=128, blank=True)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["profile_id", "seq"], name="events_profile_seq_idx"),
            models.Index(fields=["agent_id", "seq"], name="events_agent_seq_idx"),
            models.Index(fields=["pool", "seq"], name="events_pool_seq_idx"),
        ]

    def __str__(self):
        return f"#{self.seq} {self.type}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise RuntimeError("events are append-only: an event row is never updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RuntimeError("events are append-only: an event row is never deleted")


class EventArchive(models.Model):
    """Events older than the retention (TETHER_EVENT_RETENTION_DAYS), moved here by the archive job
    with their original `seq`: history is kept, the live log stays small. Same columns as Event."""

    seq = models.BigIntegerField(primary_key=True)
    type = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200)
    assignment_id = models.UUIDField(null=True, blank=True, db_index=True)
    profile_id = models.CharField(max_length=128, blank=True)
    agent_id = models.CharField(max_length=128, blank=True)
    pool = models.CharField(max_length=64, blank=True)
    task_id = models.CharField(max_length=128, blank=True)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    data = models.JSONField(default=dict, blank=True)
    archived_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seq"]

    def __str__(self):
        return f"#{self.seq} {self.type} (archived)"


class UsageRollup(models.Model):
    """Usage of one profile, agent or pool during one hour, for history and trends.

    Recomputed from the assignments and the event log by the rollup job (idempotent: a run replaces
    the rows of the hours it covers). `busy_seconds` is the time assignments were held by an agent
    within the hour, split between agents by failover and rebalancing (time spent waiting for an
    agent counts for nobody).
    """

    class Scope(models.TextChoices):
        PROFILE = "profile", "Profile"
        AGENT = "agent", "Agent"
        POOL = "pool", "Pool"

    hour = models.DateTimeField()
    scope = models.CharField(max_length=8, choices=Scope.choices)
    key = models.CharField(max_length=128)  # the profile_id, agent_id or pool name
    assignments = models.PositiveIntegerField(default=0)  # assignments created or handed to it
    busy_seconds = models.FloatField(default=0.0)
    conflicts = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    expirations = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-hour", "scope", "key"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "key", "hour"], name="%(app_label)s_%(class)s_one_per_hour"),
        ]
        indexes = [models.Index(fields=["hour"], name="rollup_hour_idx")]

    def __str__(self):
        return f"{self.scope}:{self.key} @ {self.hour:%Y-%m-%d %H:00}"


class JobRun(models.Model):
    """When each background job last ran and what it did (`GET /health` reports it). Bookkeeping of
    the job runner (config/jobs.py), not domain state: one row per job, overwritten on each run."""

    name = models.CharField(max_length=64, primary_key=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_ok = models.BooleanField(default=True)
    last_result = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    runs = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class IdempotencyKey(models.Model):
    """The first answer to a request sent with an `Idempotency-Key` header (REST API), kept so that
    a retry gets the same answer and changes nothing. Scoped per credential; expires.

    API bookkeeping, not domain state: written by `config.api.idempotency` only. The stored body is
    encrypted with a key derived from SECRET_KEY and the idempotency key itself (it may hold a new
    agent's token).
    """

    scope = models.CharField(max_length=200)  # the credential: "agent:<pk>", "user:<pk>", "enrollment:<hash>"
    key = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=100)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)  # null while the first request runs
    response_body = models.BinaryField(blank=True, default=b"")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="%(app_label)s_%(class)s_one_per_credential"),
        ]

    def __str__(self):
        return f"{self.scope} {self.key}"


class Alert(models.Model):
    """A condition an operator must act on (a pool with work waiting and no agent to take it, a
    stale agent, a burst of refused takes). One condition raises one alert: while an alert is
    unresolved (open or acknowledged), raising the same condition again (`dedup_key`) only counts it.

    Ids are the domain's own strings, as on events, so an alert outlives the rows it names.
    """

    class Kind(models.TextChoices):
        POOL_NO_HEALTHY_AGENT = "pool_no_healthy_agent", "Assignments waiting with no healthy agent"
        AGENT_STALE = "agent_stale", "Agent stale"
        CONFLICT_BURST = "conflict_burst", "Burst of refused takes"
        ASSIGNMENT_LOST = "assignment_lost", "Agent no longer reports an assignment it holds"
        DEADLOCK = "deadlock", "Requests waiting for each other's profiles"
        PROFILE_QUARANTINED = "profile_quarantined", "Profile quarantined (reported banned)"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    UNRESOLVED_STATUSES = (Status.OPEN, Status.ACKNOWLEDGED)

    alert_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    message = models.CharField(max_length=500)
    # The condition this alert stands for, e.g. "agent_stale:agent-7": at most one unresolved per key.
    dedup_key = models.CharField(max_length=300)
    pool = models.CharField(max_length=64, blank=True)
    agent_id = models.CharField(max_length=128, blank=True)
    profile_id = models.CharField(max_length=128, blank=True)
    assignment_id = models.UUIDField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    # How many times the condition was raised while this alert was unresolved, and the last time.
    occurrences = models.PositiveIntegerField(default=1)
    raised_at = models.DateTimeField(default=timezone.now)
    last_raised_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.CharField(max_length=200, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at"]
        indexes = [
            models.Index(fields=["status", "-raised_at"], name="alert_status_raised_idx"),
        ]
        constraints = [
            # One condition, one unresolved alert — held by the database across web instances and workers.
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=models.Q(status__in=["open", "acknowledged"]),
                name="%(app_label)s_%(class)s_one_unresolved_per_condition",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="acknowledged") | models.Q(acknowledged_at__isnull=False),
                name="%(app_label)s_%(class)s_acknowledged_has_acknowledged_at",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="resolved") | models.Q(resolved_at__isnull=False),
                name="%(app_label)s_%(class)s_resolved_has_resolved_at",
            ),
        ]

    def __str__(self):
        return f"{self.kind} ({self.status}): {self.message}"

    @property
    def is_unresolved(self) -> bool:
        return self.status in self.UNRESOLVED_STATUSES


# The one table of allowed alert transitions: an operator acknowledges an open alert; the condition
# clearing (or an operator) resolves an open or acknowledged one. Resolved is final: the same
# condition raised again is a new alert.
_A = Alert.Status
ALERT_TRANSITIONS = StateMachine("alert", {
    _A.OPEN: {_A.ACKNOWLEDGED, _A.RESOLVED},
    _A.ACKNOWLEDGED: {_A.RESOLVED},
    _A.RESOLVED: set(),
})
