import django_filters
from rest_framework.exceptions import ValidationError

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
    status = django_filters.CharFilter(
        method="filter_status",
        help_text="open, acknowledged, resolved, a comma-separated list, or `unresolved` (open or acknowledged)",
    )
    kind = ChoiceInFilter(choices=Alert.Kind.choices, help_text="one kind or a comma-separated list")
    pool = django_filters.CharFilter()

    class Meta:
        model = Alert
        fields = ["status", "kind", "pool"]

    def filter_status(self, queryset, name, value):
        statuses = [s for s in value.split(",") if s]
        if statuses == ["unresolved"]:
            return queryset.filter(status__in=Alert.UNRESOLVED_STATUSES)
        unknown = [s for s in statuses if s not in Alert.Status.values]
        if unknown or not statuses:
            raise ValidationError(
                {"status": [f"use `unresolved` or statuses among {', '.join(Alert.Status.values)}"]}
            )
        return queryset.filter(status__in=statuses)
