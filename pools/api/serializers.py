from rest_framework import serializers

from agents.models import Agent
from config.api.serializers import QuerySerializer, StrictInputSerializer
from pools.models import AgentPool, Task


class PoolCountsSerializer(serializers.Serializer):
    agents = serializers.IntegerField()
    agents_by_status = serializers.DictField(child=serializers.IntegerField())
    live_assignments = serializers.IntegerField(source="live", help_text="pending, active, idle or releasing")
    waiting_assignments = serializers.IntegerField(
        source="waiting", help_text="live assignments waiting for an agent (pending, with no agent)"
    )
    queued_requests = serializers.IntegerField(
        source="queued", help_text="requests waiting for a profile someone holds (pending, with their agent)"
    )
    profiles = serializers.IntegerField()
    queued_tasks = serializers.IntegerField(help_text="tasks of the pool waiting in its queues")


class PoolSerializer(serializers.Serializer):
    name = serializers.CharField()
    platform = serializers.ChoiceField(choices=AgentPool.Platform.choices)
    region = serializers.CharField()
    strategy = serializers.ChoiceField(choices=AgentPool.Strategy.choices)
    heartbeat_timeout_seconds = serializers.IntegerField()
    assignment_idle_timeout_seconds = serializers.IntegerField()
    min_health_score = serializers.FloatField()
    conflict_policy = serializers.ChoiceField(choices=AgentPool.ConflictPolicy.choices)
    preemption = serializers.BooleanField()
    profile_cooldown_seconds = serializers.IntegerField()
    profile_daily_quota = serializers.IntegerField(help_text="takes per profile per UTC day; 0: no limit")
    task_capacity = serializers.IntegerField(help_text="tasks each agent may hold at once, unless it sets its own")
    counts = PoolCountsSerializer(required=False)
    created_at = serializers.DateTimeField()


class PoolCreatedSerializer(PoolSerializer):
    enrollment_token = serializers.CharField(help_text="shown this once: agents send it as X-Enrollment-Token")


class PoolCreateSerializer(StrictInputSerializer):
    name = serializers.SlugField(max_length=64)
    platform = serializers.ChoiceField(choices=AgentPool.Platform.choices, required=False)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    strategy = serializers.ChoiceField(choices=AgentPool.Strategy.choices, required=False)
    heartbeat_timeout_seconds = serializers.IntegerField(min_value=1, max_value=86400, required=False)
    assignment_idle_timeout_seconds = serializers.IntegerField(min_value=1, max_value=30 * 86400, required=False)
    min_health_score = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    conflict_policy = serializers.ChoiceField(choices=AgentPool.ConflictPolicy.choices, required=False)
    preemption = serializers.BooleanField(required=False)
    profile_cooldown_seconds = serializers.IntegerField(min_value=0, max_value=30 * 86400, required=False)
    profile_daily_quota = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    task_capacity = serializers.IntegerField(min_value=1, max_value=10_000, required=False)


class PoolUpdateSerializer(StrictInputSerializer):
    """`PATCH /api/pools/{name}`: any writable field (the name and the enrollment token stay)."""

    platform = serializers.ChoiceField(choices=AgentPool.Platform.choices, required=False)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    strategy = serializers.ChoiceField(choices=AgentPool.Strategy.choices, required=False)
    heartbeat_timeout_seconds = serializers.IntegerField(min_value=1, max_value=86400, required=False)
    assignment_idle_timeout_seconds = serializers.IntegerField(min_value=1, max_value=30 * 86400, required=False)
    min_health_score = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    task_capacity = serializers.IntegerField(min_value=1, max_value=10_000, required=False)


# --- Tasks -------------------------------------------------------------------------------------------

_DT = serializers.DateTimeField()


class StrictSerializer(StrictInputSerializer):
    """Refuses fields it does not declare and values of the wrong JSON type (DESIGN.md: a client
    must learn at once that a field it sends does nothing) — 400 `validation_error` naming them
    (config/api/serializers.py). Checked in to_internal_value, not validate(): nested serializers
    (and each item of a list) see their own data only there."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        return super().to_internal_value(data)


class EmptySerializer(StrictSerializer):
    pass


class TaskRequirementsSerializer(StrictSerializer):
    capabilities = serializers.ListField(child=serializers.CharField(max_length=200), max_length=100, required=False,
                                         help_text="all of these, on the agent")
    tags = serializers.ListField(child=serializers.CharField(max_length=200), max_length=100, required=False,
                                 help_text="all of these, on the agent")
    agent_type = serializers.ChoiceField(choices=Agent.AgentType.choices, required=False, allow_blank=True)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    profile_id = serializers.CharField(max_length=128, required=False, allow_blank=True,
                                       help_text="the task needs this profile: it gets a fenced assignment when placed")
    profile_requirements = serializers.DictField(required=False, help_text="not supported yet (400): use profile_id")


class TaskSubmitSerializer(StrictSerializer):
    task_id = serializers.CharField(max_length=128, required=False, help_text="yours, or a UUID is chosen")
    pool = serializers.CharField(max_length=64)
    priority = serializers.ChoiceField(choices=Task.Priority.choices, required=False, default=Task.Priority.NORMAL)
    requirements = TaskRequirementsSerializer(required=False)
    payload = serializers.DictField(required=False, help_text="a JSON object, at most 16 KiB")
    max_attempts = serializers.IntegerField(min_value=1, max_value=100, required=False, default=3)
    deadline = serializers.DateTimeField(required=False, allow_null=True, help_text="not started by then: expired")


class TaskBatchSerializer(StrictSerializer):
    tasks = TaskSubmitSerializer(many=True, allow_empty=False, max_length=500)


class TaskSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    pool = serializers.CharField()
    priority = serializers.ChoiceField(choices=Task.Priority.choices)
    requirements = serializers.DictField()
    payload = serializers.DictField()
    status = serializers.ChoiceField(choices=Task.Status.choices)
    agent_id = serializers.CharField(allow_null=True)
    assignment_id = serializers.UUIDField(allow_null=True)
    fencing_token = serializers.IntegerField(allow_null=True, help_text="of the task's assignment, when it has one")
    attempt = serializers.IntegerField(help_text="the task's fencing token: send it with start, complete, fail")
    max_attempts = serializers.IntegerField()
    deadline = serializers.DateTimeField(allow_null=True)
    submitted_at = serializers.DateTimeField()
    assigned_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField()

    def to_representation(self, t):
        dt = _DT.to_representation
        return {
            "task_id": t.task_id,
            "pool": t.pool.name,
            "priority": t.priority,
            "requirements": t.requirements,
            "payload": t.payload,
            "status": t.status,
            "agent_id": t.agent.agent_id if t.agent_id else None,
            "assignment_id": str(t.assignment.assignment_id) if t.assignment_id else None,
            "fencing_token": t.assignment.fencing_token if t.assignment_id else None,
            "attempt": t.attempt,
            "max_attempts": t.max_attempts,
            "deadline": dt(t.deadline) if t.deadline else None,
            "submitted_at": dt(t.submitted_at),
            "assigned_at": dt(t.assigned_at) if t.assigned_at else None,
            "started_at": dt(t.started_at) if t.started_at else None,
            "finished_at": dt(t.finished_at) if t.finished_at else None,
            "result": t.result,
            "error": t.error,
        }


class TaskListSerializer(serializers.Serializer):
    tasks = TaskSerializer(many=True)


class AttemptSerializer(StrictSerializer):
    attempt = serializers.IntegerField(min_value=1, help_text="the task's current attempt (409 when stale)")


class CompleteSerializer(AttemptSerializer):
    result = serializers.JSONField(required=False, allow_null=True)


class FailSerializer(AttemptSerializer):
    error = serializers.CharField(max_length=2000, required=False, allow_blank=True, trim_whitespace=False)
    retry = serializers.BooleanField(required=False, default=False)


class ClaimSerializer(StrictSerializer):
    max = serializers.IntegerField(min_value=1, max_value=100, required=False, default=1)
    wait_seconds = serializers.FloatField(min_value=0, max_value=30, required=False, default=0)


class PoolQuerySerializer(QuerySerializer):
    pool = serializers.CharField(max_length=64, required=False)


class TaskStatusSerializer(serializers.Serializer):
    submitted = serializers.IntegerField()
    queued = serializers.IntegerField()
    assigned = serializers.IntegerField()
    running = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    expired = serializers.IntegerField()
    average_distribution_seconds = serializers.FloatField(allow_null=True, help_text="submitted → assigned")
    success_rate = serializers.FloatField(allow_null=True, help_text="completed / (completed + failed)")
    agents = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))


class QueuesSerializer(serializers.Serializer):
    queues = serializers.DictField(child=serializers.IntegerField(), help_text="queued tasks per priority")
    pools = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))


class ClearedSerializer(serializers.Serializer):
    cleared = serializers.IntegerField()


class QueueStatsSerializer(serializers.Serializer):
    queues = serializers.DictField(child=serializers.DictField())
    pools = serializers.DictField(child=serializers.DictField())
