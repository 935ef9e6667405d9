import re
from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from assignments.models import Alert, Assignment, Event
from assignments.selectors import MAX_EVENT_PAGE
from config.api.serializers import QuerySerializer, StrictInputSerializer


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


class AssignmentCreateSerializer(StrictInputSerializer):
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


class ProfileReportSerializer(StrictInputSerializer):
    outcome = serializers.ChoiceField(choices=["success", "failure", "captcha", "banned"])
    detail = serializers.CharField(max_length=500, required=False, allow_blank=True)


class QuarantineClearSerializer(StrictInputSerializer):
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


def _parse_window(value: str) -> int:
    match = _WINDOW_RE.match(value)
    if not match:
        raise serializers.ValidationError("use seconds or a number with s, m, h or d, e.g. 24h")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise serializers.ValidationError("the window must be from 1 second to 366 days")
    return seconds


class WindowQuerySerializer(QuerySerializer):
    """A time window: `since` and `until` (ISO 8601, UTC when no offset), or `window` back from
    `until` (default now). `validated_data` gains `since` and `until` as datetimes."""

    DEFAULT_WINDOW = 86400

    since = serializers.DateTimeField(required=False, help_text="start of the window (inclusive), ISO 8601")
    until = serializers.DateTimeField(required=False, help_text="end of the window (exclusive), ISO 8601; default now")
    window = serializers.CharField(
        required=False, max_length=12,
        help_text="instead of `since`: how far back from `until` — seconds, or a number with s, m, h or d "
        "(e.g. 15m, 24h, 7d); default 24h",
    )
    pool = serializers.CharField(required=False, max_length=64, help_text="only this pool (its name)")

    def validate_window(self, value):
        return _parse_window(value)

    def validate(self, attrs):
        if "since" in attrs and "window" in attrs:
            raise serializers.ValidationError({"window": ["give `since` or `window`, not both"]})
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - timedelta(seconds=attrs.get("window", self.DEFAULT_WINDOW))
        if since >= until:
            raise serializers.ValidationError({"since": ["must be before `until`"]})
        if (until - since).total_seconds() > self.max_seconds(attrs):
            raise serializers.ValidationError(
                {"since": [f"the window may span at most {self.max_seconds(attrs) // 86400} days"]})
        return attrs | {"since": since, "until": until}

    def max_seconds(self, attrs) -> int:
        return MAX_WINDOW_SECONDS


class MetricsQuerySerializer(WindowQuerySerializer):
    pass


class MetricsSerializer(serializers.Serializer):
    since = serializers.DateTimeField(help_text="start of the window (inclusive)")
    until = serializers.DateTimeField(help_text="end of the window (exclusive)")
    window_seconds = serializers.FloatField()
    pool = serializers.CharField(allow_null=True, help_text="the pool asked for, or null for all")
    total_assignments = serializers.IntegerField(help_text="assignments created in the window")
    active_assignments = serializers.IntegerField(
        help_text="live assignments now (pending, active, idle or releasing), whatever the window")
    successful_assignments = serializers.IntegerField(
        help_text="of the assignments created in the window, those that ended before `until` released by "
        "their own agent (release reason `released`). Force-released, cancelled and 'agent lost while "
        "releasing' are neither successful nor failed")
    failed_assignments = serializers.IntegerField(
        help_text="of the assignments created in the window, those that ended `failed` or `expired` before `until`")
    average_assignment_duration = serializers.FloatField(
        allow_null=True,
        help_text="seconds from creation to end, averaged over the assignments created in the window that "
        "ended before `until`; null when none did")
    profile_utilization_rates = serializers.DictField(
        child=serializers.FloatField(),
        help_text="profile_id → share (0–1) of the window the profile was held by an agent (active, idle or "
        "releasing; time spent pending, waiting for an agent or for the profile, is not held). At most 100 "
        "profiles, the busiest first; profiles never held in the window are left out (0)")
    agent_efficiency_scores = serializers.DictField(
        child=serializers.FloatField(),
        help_text="agent_id → share (0–1) of its holdings that ended in the window which it finished well: "
        "released by itself, out of those plus the ones that failed, expired, were lost while releasing or "
        "were moved away from it by failover (stale, drained, deregistered). After a failover each agent is "
        "judged on its own stretch: the time and outcome of a reassigned assignment are split between the "
        "agents that held it (its `assignment.reassigned` events). Force-released holdings count neither "
        "way. At most 100 agents, the busiest first")
    conflicts = serializers.IntegerField(help_text="refused takes (`assignment.conflict` events) in the window")
    conflict_frequency = serializers.FloatField(
        help_text="conflicts per take attempt: conflicts / (assignments created + conflicts) in the window, 0–1")


BUCKETS = ("hour", "day")
MAX_HOUR_BUCKETS = 24 * 31
MAX_DAY_BUCKETS = 366


class SeriesQuerySerializer(WindowQuerySerializer):
    bucket = serializers.ChoiceField(choices=BUCKETS, required=False, default="hour",
                                     help_text="hour (default window 24h, at most 31 days) or day (default 30 days, "
                                     "at most 366 days); buckets are UTC hours or days")

    def validate(self, attrs):
        if "since" not in attrs and "window" not in attrs and attrs.get("bucket") == "day":
            attrs["window"] = 30 * 86400
        return super().validate(attrs)

    def max_seconds(self, attrs) -> int:
        return MAX_DAY_BUCKETS * 86400 if attrs.get("bucket") == "day" else MAX_HOUR_BUCKETS * 3600


class RankingQuerySerializer(WindowQuerySerializer):
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=500)


class AgentRankingQuerySerializer(RankingQuerySerializer):
    sort = serializers.ChoiceField(choices=["busy", "assignments", "failovers", "tasks"], required=False, default="busy")


class UtilizationPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="the bucket's start (UTC)")
    assignments = serializers.IntegerField(help_text="assignments created in the bucket")
    busy_seconds = serializers.FloatField(help_text="profile-seconds held by agents in the bucket (waiting excluded)")
    average_held = serializers.FloatField(help_text="busy_seconds / the bucket's length: profiles held on average")
    utilization = serializers.FloatField(
        allow_null=True, help_text="average_held / enabled profiles (of the pool, or of the fleet), 0–1; null with none")
    successes = serializers.IntegerField(help_text="assignments released by their own agent")
    failures = serializers.IntegerField(help_text="assignments that failed")
    expirations = serializers.IntegerField()
    conflicts = serializers.IntegerField(help_text="refused takes")
    waits = serializers.IntegerField(help_text="assignments that began waiting (created pending or failed over to pending)")
    wait_seconds = serializers.FloatField(help_text="assignment-seconds spent waiting")
    failovers = serializers.IntegerField(help_text="`assignment.reassigned` events")


class UtilizationSerializer(serializers.Serializer):
    bucket = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    pool = serializers.CharField(allow_null=True)
    profiles = serializers.IntegerField(help_text="enabled profiles now (of the pool when given)")
    series = UtilizationPointSerializer(many=True, help_text="one point per bucket, oldest first, zeros included")


class ContentionSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    conflicts = serializers.IntegerField(help_text="refused takes of this profile")
    waits = serializers.IntegerField()
    wait_seconds = serializers.FloatField(help_text="time its assignments spent waiting")
    failovers = serializers.IntegerField()
    assignments = serializers.IntegerField()
    busy_seconds = serializers.FloatField()


class ContentionPageSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    pool = serializers.CharField(allow_null=True)
    results = ContentionSerializer(many=True, help_text="ranked by conflicts, then wait time, then failovers")


class AgentAnalyticsSerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    pool = serializers.CharField(allow_null=True)
    assignments = serializers.IntegerField(help_text="assignments created for it or handed to it by failover")
    busy_seconds = serializers.FloatField(help_text="profile-seconds it held (its own stretch only, after a failover)")
    busy_share = serializers.FloatField(allow_null=True, help_text="busy_seconds / (window × its capacity), 0–1")
    successes = serializers.IntegerField()
    failures = serializers.IntegerField()
    expirations = serializers.IntegerField()
    failovers = serializers.IntegerField(help_text="assignments moved away from it")
    efficiency = serializers.FloatField(
        allow_null=True, help_text="successes / (successes + failures + expirations + failovers); null when none")
    tasks_completed = serializers.IntegerField()
    tasks_failed = serializers.IntegerField(help_text="tasks that failed for good (not retried)")
    average_task_seconds = serializers.FloatField(allow_null=True, help_text="from start (or assignment) to the end")


class AgentAnalyticsPageSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    pool = serializers.CharField(allow_null=True)
    results = AgentAnalyticsSerializer(many=True)


class TaskPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    enqueued = serializers.IntegerField(help_text="tasks submitted or requeued")
    dequeued = serializers.IntegerField(help_text="tasks that left the queue: assigned, cancelled or expired")
    queue_depth = serializers.IntegerField(help_text="queued tasks at the bucket's end")
    assigned = serializers.IntegerField()
    average_wait_seconds = serializers.FloatField(allow_null=True, help_text="of the tasks assigned in the bucket")
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    expired = serializers.IntegerField()


class TaskSeriesSerializer(serializers.Serializer):
    bucket = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    pool = serializers.CharField(allow_null=True)
    tasks_recorded = serializers.BooleanField(help_text="whether any task.* event exists (false: all zeros)")
    series = TaskPointSerializer(many=True)


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
