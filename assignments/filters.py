import django_filters

from assignments.models import Alert, Assignment, Profile
from config.api.filters import StrictFilterSet


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """`?status=active,idle`"""


class AssignmentFilter(StrictFilterSet):
    status = ChoiceInFilter(choices=Assignment.Status.choices, help_text="one status or a comma-separated list")
    agent_id = django_filters.CharFilter(field_name="agent__agent_id")
    profile_id = django_filters.CharFilter(field_name="profile__profile_id")
    pool = django_filters.CharFilter(field_name="pool__name")
    workflow_id = django_filters.CharFilter()
    platform_resource_id = django_filters.CharFilter(help_text="the pod, container… the holder runs the session in")

    class Meta:
        model = Assignment
        fields = ["status", "agent_id", "profile_id", "pool", "workflow_id", "platform_resource_id"]


class ProfileFilter(StrictFilterSet):
    pool = django_filters.CharFilter(field_name="pool__name")
    enabled = django_filters.BooleanFilter()
    region = django_filters.CharFilter()

    class Meta:
        model = Profile
        fields = ["pool", "enabled", "region"]


class AlertFilter(StrictFilterSet):
    status = ChoiceInFilter(
        choices=[*Alert.Status.choices, ("unresolved", "Open or acknowledged")],
        method="filter_status",
        help_text="one status or a comma-separated list; `unresolved` is open or acknowledged",
    )
    kind = ChoiceInFilter(choices=Alert.Kind.choices, help_text="one kind or a comma-separated list")
    pool = django_filters.CharFilter()

    class Meta:
        model = Alert
        fields = ["status", "kind", "pool"]

    def filter_status(self, queryset, name, value):
        statuses = set(value)
        if "unresolved" in statuses:
            statuses = (statuses - {"unresolved"}) | set(Alert.UNRESOLVED_STATUSES)
        return queryset.filter(status__in=sorted(statuses))
