from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from config.transitions import StateMachine


class Agent(models.Model):
    """A browser-automation worker. `agent_id` is the agent's own name for itself."""

    class AgentType(models.TextChoices):
        WORKER = "worker", "Worker"
        PROVIDER = "provider", "Provider"
        CONSUMER = "consumer", "Consumer"
        GENERAL = "general", "General"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        BUSY = "busy", "Busy"
        DRAINING = "draining", "Draining"
        INACTIVE = "inactive", "Inactive"
        STALE = "stale", "Stale"

    agent_id = models.CharField(max_length=128, unique=True)
    pool = models.ForeignKey("pools.AgentPool", on_delete=models.PROTECT, related_name="agents")
    agent_type = models.CharField(max_length=16, choices=AgentType.choices, default=AgentType.WORKER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    capabilities = models.JSONField(default=list, blank=True)
    services = models.JSONField(default=list, blank=True)
    endpoints = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    version = models.CharField(max_length=64, blank=True)
    region = models.CharField(max_length=64, blank=True)
    capacity = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(10_000)])
    # Tasks it may hold at once (assigned or running); null: its pool's `task_capacity`.
    task_capacity = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(10_000)]
    )
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1_000.0)])
    priority = models.IntegerField(default=0, validators=[MinValueValidator(-1_000), MaxValueValidator(1_000)])
    load_metrics = models.JSONField(default=dict, blank=True)
    health_score = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(default=timezone.now)
    # When the pool's strategy last handed this agent work (round robin picks the longest-waiting).
    last_assigned_at = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the agent's API token; empty once the agent deregisters (the token stops working).
    token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)

    class Meta:
        ordering = ["agent_id"]
        indexes = [
            models.Index(fields=["pool", "status"], name="agents_agent_pool_status_idx"),
            models.Index(fields=["status", "last_heartbeat"], name="agents_agent_status_hb_idx"),
            # Discovery: a pool's agents, healthiest first, without sorting the pool (agents/selectors.py).
            # On PostgreSQL a GIN index on `capabilities` serves the all-of filter (migration 0003).
            models.Index(fields=["pool", "-health_score", "agent_id"], name="agents_agent_discover_idx"),
            # Discovery across pools by status (the usual "active"): read in answer order, stopping at
            # the limit, rather than every matching agent read and sorted (issue 15).
            models.Index(fields=["status", "-health_score", "agent_id"], name="agents_agent_status_health_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(health_score__gte=0.0, health_score__lte=1.0),
                name="%(app_label)s_%(class)s_health_score_in_range",
            ),
            models.CheckConstraint(condition=models.Q(capacity__gte=1), name="%(app_label)s_%(class)s_capacity_positive"),
            models.CheckConstraint(condition=models.Q(weight__gte=0.0), name="%(app_label)s_%(class)s_weight_not_negative"),
        ]

    def __str__(self):
        return self.agent_id

    @property
    def accepts_new_work(self) -> bool:
        """Whether the pool may hand this agent work it did not ask for (failover, rebalancing)."""
        return self.status == self.Status.ACTIVE

    @property
    def may_take(self) -> bool:
        """Whether the agent may take a profile for itself."""
        return self.status in (self.Status.ACTIVE, self.Status.BUSY)


# The one table of allowed agent status transitions (config.transitions: every write asks it).
# `inactive → active` and `draining → active` happen only by registering again (`agent_register`);
# an agent's own status call refuses them (`agent_set_status`).
_S = Agent.Status
AGENT_TRANSITIONS = StateMachine("agent", {
    _S.ACTIVE: {_S.BUSY, _S.DRAINING, _S.STALE, _S.INACTIVE},
    _S.BUSY: {_S.ACTIVE, _S.DRAINING, _S.STALE, _S.INACTIVE},
    _S.DRAINING: {_S.ACTIVE, _S.STALE, _S.INACTIVE},
    _S.STALE: {_S.ACTIVE, _S.DRAINING, _S.INACTIVE},
    _S.INACTIVE: {_S.ACTIVE},
})
agent_can_transition = AGENT_TRANSITIONS.allows
# Reached only by registering again.
REGISTRATION_ONLY = frozenset({(_S.INACTIVE, _S.ACTIVE), (_S.DRAINING, _S.ACTIVE)})
