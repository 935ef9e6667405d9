from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


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
        ]

    def __str__(self):
        return self.name
