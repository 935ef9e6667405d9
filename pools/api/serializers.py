from rest_framework import serializers

from config.api.serializers import StrictInputSerializer
from pools.models import AgentPool


class PoolCountsSerializer(serializers.Serializer):
    agents = serializers.IntegerField()
    agents_by_status = serializers.DictField(child=serializers.IntegerField())
    live_assignments = serializers.IntegerField(source="live", help_text="pending, active, idle or releasing")
    waiting_assignments = serializers.IntegerField(
        source="waiting", help_text="live assignments waiting for an agent (pending, with no agent)"
    )
    profiles = serializers.IntegerField()


class PoolSerializer(serializers.Serializer):
    name = serializers.CharField()
    platform = serializers.ChoiceField(choices=AgentPool.Platform.choices)
    region = serializers.CharField()
    strategy = serializers.ChoiceField(choices=AgentPool.Strategy.choices)
    heartbeat_timeout_seconds = serializers.IntegerField()
    assignment_idle_timeout_seconds = serializers.IntegerField()
    min_health_score = serializers.FloatField()
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


class PoolUpdateSerializer(StrictInputSerializer):
    """`PATCH /api/pools/{name}`: any writable field (the name and the enrollment token stay)."""

    platform = serializers.ChoiceField(choices=AgentPool.Platform.choices, required=False)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    strategy = serializers.ChoiceField(choices=AgentPool.Strategy.choices, required=False)
    heartbeat_timeout_seconds = serializers.IntegerField(min_value=1, max_value=86400, required=False)
    assignment_idle_timeout_seconds = serializers.IntegerField(min_value=1, max_value=30 * 86400, required=False)
    min_health_score = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
