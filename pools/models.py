from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from config.transitions import StateMachine


def _default_heartbeat_timeout():
    return settings.TETHER_HEARTBEAT_TIMEOUT_SECONDS


def _default_idle_timeout():
    return settings.TETHER_ASSIGNMENT_IDLE_TIMEOUT_SECONDS


def _default_min_health():
    return settings.TETHER_MIN_HEALTH_SCORE


class AgentPool(models.Model):
    """A logical group of agents; sessions (assignments) belong to it, not to any one agent."""

    class Platform(models.TextChoices):
        KUBERNETES = "kubernetes", "Kubernetes"
        DOCKER = "docker", "Docker"
        BARE = "bare", "Bare metal"
        VM = "vm", "Virtual machine"
        OTHER = "other", "Other"

    class Strategy(models.TextChoices):
        LEAST_CONNECTIONS = "least_connections", "Least connections"
        ROUND_ROBIN = "round_robin", "Round robin"
        WEIGHTED_ROUND_ROBIN = "weighted_round_robin", "Weighted round robin"
        RESOURCE_BASED = "resource_based", "Resource based"
        GEOGRAPHIC = "geographic", "Geographic"
        RANDOM = "random", "Random"

    class ConflictPolicy(models.TextChoices):
        FIFO = "fifo", "First come, first served"
        PRIORITY = "priority", "Highest priority first, then first come"

    name = models.SlugField(max_length=64, unique=True)
    platform = models.CharField(max_length=16, choices=Platform.choices, default=Platform.OTHER)
    region = models.CharField(max_length=64, blank=True)
    strategy = models.CharField(max_length=32, choices=Strategy.choices, default=Strategy.LEAST_CONNECTIONS)
    heartbeat_timeout_seconds = models.PositiveIntegerField(
        default=_default_heartbeat_timeout, validators=[MinValueValidator(1), MaxValueValidator(86400)]
    )
    assignment_idle_timeout_seconds = models.PositiveIntegerField(
        default=_default_idle_timeout, validators=[MinValueValidator(1), MaxValueValidator(30 * 86400)]
    )
    min_health_score = models.FloatField(
        default=_default_min_health, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    # Who gets a contested profile next (assignments/waits.py), and whether a waiting request of
    # strictly higher priority sends the holder's assignment to `releasing` (reason `preempted`).
    conflict_policy = models.CharField(max_length=16, choices=ConflictPolicy.choices, default=ConflictPolicy.FIFO)
    preemption = models.BooleanField(default=False)
    # Guardrails for anti-detect profiles: a released profile rests this long before anyone takes it
    # again, and is taken at most this many times per UTC day (0: no limit).
    profile_cooldown_seconds = models.PositiveIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(30 * 86400)]
    )
    profile_daily_quota = models.PositiveIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(1_000_000)]
    )
    # Tasks each agent of the pool may hold at once (assigned or running) unless it sets its own.
    task_capacity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(10_000)])
    # SHA-256 of the enrollment token; the token itself is shown once, when the pool is created.
    enrollment_token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_health_score__gte=0.0, min_health_score__lte=1.0),
                name="%(app_label)s_%(class)s_min_health_score_in_range",
            ),
            models.CheckConstraint(
                condition=models.Q(heartbeat_timeout_seconds__gte=1, assignment_idle_timeout_seconds__gte=1),
                name="%(app_label)s_%(class)s_timeouts_positive",
            ),
            models.CheckConstraint(condition=models.Q(task_capacity__gte=1),
                                   name="%(app_label)s_%(class)s_task_capacity_positive"),
        ]

    def __str__(self):
        return self.name


class TaskQuerySet(models.QuerySet):
    def queued(self):
        return self.filter(status=Task.Status.QUEUED)

    def held(self):
        """Handed to an agent and not finished: what counts against its `task_capacity`."""
        return self.filter(status__in=Task.HELD_STATUSES)


class Task(models.Model):
    """A unit of work for one agent of a pool, queued by priority (DESIGN.md, "Tasks").

    `attempt` is the task's fencing token: it grows each time the task goes back to the queue, and
    every call about the task must name the current one. `queue_order` is when the task is due in
    the queue: its submission time plus one aging period per priority level below `urgent`
    (`TETHER_TASK_AGING_SECONDS`), so ordering by it is "higher priority first, oldest first within
    one, and a task that waited a period longer moves up one level" in one indexed column.
    """

    class Priority(models.TextChoices):
        URGENT = "urgent", "Urgent"
        CRITICAL = "critical", "Critical"
        HIGH = "high", "High"
        NORMAL = "normal", "Normal"
        LOW = "low", "Low"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        ASSIGNED = "assigned", "Assigned"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    HELD_STATUSES = (Status.ASSIGNED, Status.RUNNING)
    TERMINAL_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.EXPIRED)
    # Levels below `urgent`: 0 for urgent … 4 for low.
    PRIORITY_RANK = {p: i for i, p in enumerate(Priority.values)}

    task_id = models.CharField(max_length=128, unique=True)
    pool = models.ForeignKey(AgentPool, on_delete=models.PROTECT, related_name="tasks")
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    queue_order = models.DateTimeField()
    # As submitted (normalised); the columns below are the same, for filtering in SQL.
    requirements = models.JSONField(default=dict, blank=True)
    req_capabilities = models.JSONField(default=list, blank=True)
    req_tags = models.JSONField(default=list, blank=True)
    req_agent_type = models.CharField(max_length=16, blank=True)
    req_region = models.CharField(max_length=64, blank=True)
    req_profile_id = models.CharField(max_length=128, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, null=True, blank=True, related_name="tasks")
    assignment = models.ForeignKey(
        "assignments.Assignment", on_delete=models.PROTECT, null=True, blank=True, related_name="tasks"
    )
    attempt = models.PositiveIntegerField(default=1)
    max_attempts = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(100)])
    deadline = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(default=timezone.now)
    submitted_by = models.CharField(max_length=200, blank=True)  # the actor, for "the submitter may cancel"
    assigned_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-submitted_at"]
        indexes = [
            # The queue: a pool's queued tasks in order (placement, claims, queue sizes).
            models.Index(fields=["pool", "status", "queue_order"], name="task_pool_status_order_idx"),
            models.Index(fields=["agent", "status"], name="task_agent_status_idx"),
            models.Index(fields=["status", "deadline"], name="task_status_deadline_idx"),
            models.Index(fields=["-submitted_at"], name="task_submitted_at_idx"),
        ]
        constraints = [
            # Someone holds an assigned or running task; a queued one has no agent (an ended one
            # keeps the agent that ended it, for the per-agent counts).
            models.CheckConstraint(
                condition=~models.Q(status__in=["assigned", "running"]) | models.Q(agent__isnull=False),
                name="%(app_label)s_%(class)s_held_has_agent",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="queued") | models.Q(agent__isnull=True),
                name="%(app_label)s_%(class)s_queued_has_no_agent",
            ),
            models.CheckConstraint(condition=models.Q(attempt__gte=1), name="%(app_label)s_%(class)s_attempt_positive"),
            models.CheckConstraint(
                condition=models.Q(attempt__lte=models.F("max_attempts")),
                name="%(app_label)s_%(class)s_attempt_within_max",
            ),
        ]

    def __str__(self):
        return f"{self.task_id} ({self.priority}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


# The one table of allowed task status transitions (config.transitions: every write asks it).
# `assigned | running → queued` is a requeue (agent lost, or failed with retry): attempt + 1.
_T = Task.Status
TASK_TRANSITIONS = StateMachine("task", {
    _T.QUEUED: {_T.ASSIGNED, _T.CANCELLED, _T.EXPIRED},
    # `complete` or `fail` on an assigned task starts it first (assigned → running → …); an assigned
    # task whose agent is lost on its last attempt fails.
    _T.ASSIGNED: {_T.RUNNING, _T.QUEUED, _T.FAILED, _T.CANCELLED, _T.EXPIRED},
    _T.RUNNING: {_T.COMPLETED, _T.FAILED, _T.QUEUED},
    _T.COMPLETED: set(),
    _T.FAILED: set(),
    _T.CANCELLED: set(),
    _T.EXPIRED: set(),
})
