from django.utils import timezone
from rest_framework import serializers

from agents.models import Agent
from config.api.serializers import StrictInputSerializer
from pools.api.serializers import TaskSerializer


def _strings(**kwargs):
    return serializers.ListField(child=serializers.CharField(max_length=200), max_length=100, required=False, **kwargs)


class AgentSerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    pool = serializers.CharField(source="pool.name")
    agent_type = serializers.ChoiceField(choices=Agent.AgentType.choices)
    status = serializers.ChoiceField(choices=Agent.Status.choices)
    capabilities = serializers.ListField(child=serializers.CharField())
    services = serializers.ListField(child=serializers.CharField())
    endpoints = serializers.DictField()
    tags = serializers.ListField(child=serializers.CharField())
    metadata = serializers.DictField()
    version = serializers.CharField()
    region = serializers.CharField()
    capacity = serializers.IntegerField()
    task_capacity = serializers.IntegerField(allow_null=True, help_text="tasks it may hold at once; null: its pool's")
    weight = serializers.FloatField()
    priority = serializers.IntegerField()
    load_metrics = serializers.DictField()
    health_score = serializers.FloatField()
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    registered_at = serializers.DateTimeField()

    def to_representation(self, agent):
        """The fields above, written out: the same output as DRF's field-by-field walk (a test
        compares them, and fails when a field is declared above but not written here), at a
        fraction of its cost, which dominated get-agent and discover."""
        tz = timezone.get_current_timezone()  # once, not per datetime: a context-local read
        return {
            "agent_id": agent.agent_id,
            "pool": agent.pool.name,
            "agent_type": agent.agent_type,
            "status": agent.status,
            "capabilities": _texts(agent.capabilities),
            "services": _texts(agent.services),
            "endpoints": dict(agent.endpoints),
            "tags": _texts(agent.tags),
            "metadata": dict(agent.metadata),
            "version": str(agent.version),
            "region": str(agent.region),
            "capacity": int(agent.capacity),
            "task_capacity": None if agent.task_capacity is None else int(agent.task_capacity),
            "weight": float(agent.weight),
            "priority": int(agent.priority),
            "load_metrics": dict(agent.load_metrics),
            "health_score": float(agent.health_score),
            "last_heartbeat": _iso(agent.last_heartbeat, tz),
            "registered_at": _iso(agent.registered_at, tz),
        }


def _texts(values):
    return [None if value is None else str(value) for value in values]


def _iso(value, tz):
    """As DRF's DateTimeField writes a datetime in the current time zone `tz` (ISO 8601, "Z" for UTC)."""
    if value is None:
        return None
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class AgentRegisteredSerializer(AgentSerializer):
    token = serializers.CharField(help_text="the agent's API token, shown this once: 'Authorization: Token <token>'")


class AgentWritableFields(StrictInputSerializer):
    """Every field an agent may set on itself (services check the values again)."""

    agent_type = serializers.ChoiceField(choices=Agent.AgentType.choices, required=False)
    capabilities = _strings()
    services = _strings()
    endpoints = serializers.DictField(required=False)
    tags = _strings()
    metadata = serializers.DictField(required=False)
    version = serializers.CharField(max_length=64, required=False, allow_blank=True)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    capacity = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    task_capacity = serializers.IntegerField(min_value=1, max_value=10_000, required=False, allow_null=True)
    weight = serializers.FloatField(min_value=0.0, max_value=1_000.0, required=False)
    priority = serializers.IntegerField(min_value=-1_000, max_value=1_000, required=False)
    load_metrics = serializers.DictField(required=False)


# `/api/agents/register` and `/api/agents/discover` would hide an agent of that name.
RESERVED_AGENT_IDS = frozenset({"register", "discover"})


class AgentRegisterSerializer(AgentWritableFields):
    agent_id = serializers.CharField(max_length=128)
    pool = serializers.CharField(max_length=64, help_text="the pool's name")

    def validate_agent_id(self, value):
        if value.lower() in RESERVED_AGENT_IDS:
            raise serializers.ValidationError(f"{value!r} is reserved (it names an API path)")
        return value


class HeartbeatSerializer(StrictInputSerializer):
    load_metrics = serializers.DictField(required=False)
    assignments = serializers.ListField(
        child=serializers.UUIDField(),
        max_length=1000,
        required=False,
        help_text="the assignment ids the agent holds; omit to renew nothing and learn nothing",
    )
    running_profiles = serializers.ListField(
        child=serializers.CharField(max_length=128),
        max_length=1000,
        required=False,
        help_text="the profiles whose browser runs on this agent now (what its launcher says); the "
        "reply's stop_profiles names those it does not hold",
    )


class HeartbeatReplySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Agent.Status.choices)
    health_score = serializers.FloatField()
    revoked = serializers.ListField(child=serializers.UUIDField(), help_text="drop these now")
    assigned = serializers.ListField(child=serializers.UUIDField(), help_text="given to you: pick these up")
    tasks = TaskSerializer(many=True, help_text="your assigned and running tasks, highest priority first")
    stop_profiles = serializers.ListField(
        child=serializers.CharField(),
        help_text="of the running_profiles you reported, those you do not hold: stop their browsers now",
    )


class AgentStatusSerializer(StrictInputSerializer):
    status = serializers.ChoiceField(choices=[Agent.Status.ACTIVE, Agent.Status.BUSY])
    load_metrics = serializers.DictField(required=False)


class DiscoverSerializer(StrictInputSerializer):
    agent_type = serializers.ChoiceField(choices=Agent.AgentType.choices, required=False)
    status = serializers.ChoiceField(choices=Agent.Status.choices, required=False)
    capabilities = _strings()
    pool = serializers.CharField(max_length=64, required=False)
    region = serializers.CharField(max_length=64, required=False)
    min_health_score = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False, default=100)


class AgentListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = AgentSerializer(many=True)
