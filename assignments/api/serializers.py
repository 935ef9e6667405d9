import re

from rest_framework import serializers

from assignments.models import Alert, Assignment, Event
from assignments.selectors import MAX_EVENT_PAGE
from config.api.serializers import QuerySerializer, StrictInputSerializer


class RefuseUnknownFields(StrictInputSerializer):
    """Refuse a body field this serializer does not know (400 `validation_error` naming it), so a
    client learns at once that a field it sends does nothing (DESIGN.md, REST API) — and a value of
    the wrong JSON type: config/api/serializers.StrictInputSerializer does both."""


# --- Profiles ------------------------------------------------------------------------------------


class ProfileSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    name = serializers.CharField()
    pool = serializers.CharField(allow_null=True, help_text="the pool's name, or null")
    tags = serializers.ListField(child=serializers.CharField())
    region = serializers.CharField()
    metadata = serializers.DictField()
    enabled = serializers.BooleanField()
    health_score = serializers.FloatField(help_text="0–1, from its holders' recent outcome reports")
    quarantined = serializers.BooleanField(help_text="reported banned: not handed out until an operator clears it")
    quarantine_reason = serializers.CharField()
    outcomes = serializers.DictField(child=serializers.IntegerField(), help_text="reports so far: success, failure, captcha, banned")
    last_released_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, profile):
        return {
            "profile_id": profile.profile_id,
            "name": profile.name,
            "pool": profile.pool.name if profile.pool_id else None,
            "tags": profile.tags,
            "region": profile.region,
            "metadata": profile.metadata,
            "enabled": profile.enabled,
            "health_score": profile.health_score,
            "quarantined": profile.quarantined,
            "quarantine_reason": profile.quarantine_reason,
            "outcomes": {"success": profile.successes, "failure": profile.failures, "captcha": profile.captchas,
                         "banned": profile.bans},
            "last_released_at": _DT.to_representation(profile.last_released_at) if profile.last_released_at else None,
        }


class ProfileCreateSerializer(StrictInputSerializer):
    profile_id = serializers.CharField(max_length=128)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    pool = serializers.CharField(max_length=64, required=False, allow_null=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=200), max_length=100, required=False)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)
    enabled = serializers.BooleanField(required=False)


# --- Assignments ---------------------------------------------------------------------------------

_DT = serializers.DateTimeField()


class AssignmentSerializer(serializers.Serializer):
    assignment_id = serializers.UUIDField()
    profile_id = serializers.CharField()
    agent_id = serializers.CharField(allow_null=True, help_text="null while waiting for an agent")
    pool = serializers.CharField()
    workflow_id = serializers.CharField()
    status = serializers.ChoiceField(choices=Assignment.Status.choices)
    assigned_at = serializers.DateTimeField()
    released_at = serializers.DateTimeField(allow_null=True)
    last_activity = serializers.DateTimeField()
    fencing_token = serializers.IntegerField()
    platform_resource_id = serializers.CharField()
    release_reason = serializers.CharField()
    metadata = serializers.DictField()
    priority = serializers.IntegerField(allow_null=True, help_text="the request's priority (null: its agent's)")
    wait_until = serializers.DateTimeField(allow_null=True, help_text="a queued request's deadline")
    queue_position = serializers.IntegerField(
        allow_null=True, help_text="a queued request's place in its profile's queue (1: next); null otherwise and in lists"
    )

    def to_representation(self, a):
        # Hand-written: this is on every hot path (take, release, lookup), and the related objects
        # are already loaded by the service or the selector.
        dt = _DT.to_representation
        return {
            "assignment_id": str(a.assignment_id),
            "profile_id": a.profile.profile_id,
            "agent_id": a.agent.agent_id if a.agent_id else None,
            "pool": a.pool.name,
            "workflow_id": a.workflow_id,
            "status": a.status,
            "assigned_at": dt(a.assigned_at),
            "released_at": dt(a.released_at) if a.released_at else None,
            "last_activity": dt(a.last_activity),
            "fencing_token": a.fencing_token,
            "platform_resource_id": a.platform_resource_id,
            "release_reason": a.release_reason,
            "metadata": a.metadata,
            "priority": a.priority,
            "wait_until": dt(a.wait_until) if a.wait_until else None,
            "queue_position": getattr(a, "queue_position", None),
        }


class AssignmentCreateSerializer(RefuseUnknownFields):
    """Exactly one of `profile_id`, `profile_ids`, `profile_requirements`."""

    profile_id = serializers.CharField(max_length=128, required=False)
    profile_ids = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=20,
        help_text="several profiles, all or none (no wait_seconds) → 201 {\"assignments\": [...]}",
    )
    profile_requirements = serializers.DictField(
        required=False, help_text='pick a free profile: {"tags": [...], "region": "...", "pool": "..."}'
    )
    wait_seconds = serializers.FloatField(
        required=False, min_value=0, max_value=3600,
        help_text="0 (default): refuse a held profile at once (409); else wait up to this long → 202 with a pending assignment",
    )
    priority = serializers.IntegerField(
        required=False, min_value=-1000, max_value=1000, help_text="for the pool's conflict_policy (default: the agent's)"
    )
    agent_id = serializers.CharField(max_length=128, required=False, help_text="defaults to the calling agent")
    workflow_id = serializers.CharField(max_length=200, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)
    platform_resource_id = serializers.CharField(max_length=255, required=False, allow_blank=True)


class AssignmentsTakenSerializer(serializers.Serializer):
    assignments = AssignmentSerializer(many=True)


class ProfileReportSerializer(RefuseUnknownFields):
    outcome = serializers.ChoiceField(choices=["success", "failure", "captcha", "banned"])
    detail = serializers.CharField(max_length=500, required=False, allow_blank=True)


class QuarantineClearSerializer(RefuseUnknownFields):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)


class AssignmentUpdateSerializer(StrictInputSerializer):
    status = serializers.ChoiceField(
        choices=[Assignment.Status.ACTIVE, Assignment.Status.IDLE, Assignment.Status.FAILED], required=False,
        help_text="active or idle; failed reports that the work failed (with `error`)",
    )
    metadata = serializers.DictField(required=False)
    platform_resource_id = serializers.CharField(max_length=255, required=False, allow_blank=True)
    fencing_token = serializers.IntegerField(required=False, min_value=0, help_text="checked when given: 409 when stale")
    error = serializers.CharField(max_length=1000, required=False, allow_blank=True)

    def validate(self, attrs):
        if "error" in attrs and attrs.get("status") != Assignment.Status.FAILED:
            raise serializers.ValidationError({"error": ["only with status failed"]})
        return attrs


class ReleaseSerializer(StrictInputSerializer):
    fencing_token = serializers.IntegerField(required=False, min_value=0, help_text="checked when given: 409 when stale")


class ReleaseQuerySerializer(QuerySerializer):
    """`?fencing_token=` on DELETE, for clients that send no body (query strings are text)."""

    fencing_token = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1)


class ProfileReleaseSerializer(StrictInputSerializer):
    agent_id = serializers.CharField(max_length=128, required=False, help_text="the holder; defaults to the calling agent")
    fencing_token = serializers.IntegerField(required=False, min_value=0, help_text="checked when given: 409 when stale")


class StatusQuerySerializer(QuerySerializer):
    status = serializers.CharField(required=False, max_length=200)

    def validate_status(self, value):
        if value == "all":
            return []
        statuses = [s for s in value.split(",") if s]
        unknown = [s for s in statuses if s not in Assignment.Status.values]
        if unknown or not statuses:
            raise serializers.ValidationError(
                f"use `all` or statuses among {', '.join(Assignment.Status.values)}"
            )
        return statuses


class ProfileAssignmentSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    available = serializers.BooleanField()
    assignment = AssignmentSerializer(allow_null=True)


# --- Metrics -------------------------------------------------------------------------------------

_WINDOW_RE = re.compile(r"^([0-9]{1,9})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_SECONDS = 366 * 86400


class MetricsQuerySerializer(QuerySerializer):
    window = serializers.CharField(
        required=False, default="24h", max_length=12,
        help_text="how far back: seconds, or a number with s, m, h or d (e.g. 15m, 24h, 7d); default 24h",
    )

    def validate_window(self, value):
        match = _WINDOW_RE.match(value)
        if not match:
            raise serializers.ValidationError("use seconds or a number with s, m, h or d, e.g. 24h")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if not 1 <= seconds <= MAX_WINDOW_SECONDS:
            raise serializers.ValidationError("the window must be from 1 second to 366 days")
        return seconds


class ProfileUtilizationSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    held_seconds = serializers.FloatField()
    utilization = serializers.FloatField(help_text="share of the window the profile was held, 0–1")


class AgentEfficiencySerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    assignments = serializers.IntegerField()
    successful = serializers.IntegerField()
    failed = serializers.IntegerField()
    average_duration_seconds = serializers.FloatField(allow_null=True)
    efficiency = serializers.FloatField(allow_null=True, help_text="successful / ended, 0–1")


class MetricsSerializer(serializers.Serializer):
    window_seconds = serializers.IntegerField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    total = serializers.IntegerField(help_text="assignments made in the window")
    active = serializers.IntegerField(help_text="live assignments now")
    successful = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="failed or expired")
    average_duration_seconds = serializers.FloatField(allow_null=True)
    conflicts = serializers.IntegerField()
    conflict_rate = serializers.FloatField(help_text="conflicts / (assignments made + conflicts)")
    profile_utilization = ProfileUtilizationSerializer(many=True)
    agent_efficiency = AgentEfficiencySerializer(many=True)


# --- Events --------------------------------------------------------------------------------------

_TYPE_RE = re.compile(r"^[a-z_]+(\.[a-z_]*)?(\.\*)?$")


class EventQuerySerializer(QuerySerializer):
    since = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**63 - 1)
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=MAX_EVENT_PAGE)
    types = serializers.CharField(
        required=False, max_length=1000,
        help_text="comma-separated event types; a prefix ending in '.' (e.g. `assignment.`) matches them all",
    )
    pool = serializers.CharField(required=False, max_length=64)
    agent_id = serializers.CharField(required=False, max_length=128)
    profile_id = serializers.CharField(required=False, max_length=128)

    def validate_types(self, value):
        types = [t.strip() for t in value.split(",") if t.strip()]
        bad = [t for t in types if not _TYPE_RE.match(t)]
        if bad:
            raise serializers.ValidationError(f"not an event type or prefix: {bad[0][:50]!r}")
        return types


class EventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    type = serializers.CharField(help_text=", ".join(Event.Type.values) + ", task.*, alert.*")
    occurred_at = serializers.DateTimeField()
    actor = serializers.CharField()
    assignment_id = serializers.UUIDField(allow_null=True)
    profile_id = serializers.CharField(allow_null=True)
    agent_id = serializers.CharField(allow_null=True)
    pool = serializers.CharField(allow_null=True)
    from_status = serializers.CharField(allow_null=True)
    to_status = serializers.CharField(allow_null=True)
    data = serializers.DictField()


class EventPageSerializer(serializers.Serializer):
    next = serializers.CharField(allow_null=True, help_text="the next page (since = the last seq here), when full")
    previous = serializers.CharField(allow_null=True)
    last_seq = serializers.IntegerField(help_text="pass as `since` to read on (unchanged when no events)")
    results = EventSerializer(many=True)


# --- Alerts --------------------------------------------------------------------------------------


class AlertSerializer(serializers.Serializer):
    alert_id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=Alert.Kind.choices)
    severity = serializers.ChoiceField(choices=Alert.Severity.choices)
    status = serializers.ChoiceField(choices=Alert.Status.choices)
    message = serializers.CharField()
    pool = serializers.CharField(help_text="empty when the alert concerns no pool")
    agent_id = serializers.CharField()
    profile_id = serializers.CharField()
    assignment_id = serializers.UUIDField(allow_null=True)
    data = serializers.DictField()
    occurrences = serializers.IntegerField(help_text="how many times the condition was raised while unresolved")
    raised_at = serializers.DateTimeField()
    last_raised_at = serializers.DateTimeField()
    acknowledged_by = serializers.CharField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    resolved_by = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class AlertResolveSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)
