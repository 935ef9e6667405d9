import django_filters

from assignments.models import Assignment, Profile


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """`?status=active,idle`"""


class AssignmentFilter(django_filters.FilterSet):
    status = ChoiceInFilter(choices=Assignment.Status.choices, help_text="one status or a comma-separated list")
    agent_id = django_filters.CharFilter(field_name="agent__agent_id")
    profile_id = django_filters.CharFilter(field_name="profile__profile_id")
    pool = django_filters.CharFilter(field_name="pool__name")
    workflow_id = django_filters.CharFilter()
    platform_resource_id = django_filters.CharFilter(help_text="the pod, container… the holder runs the session in")

    class Meta:
        model = Assignment
        fields = ["status", "agent_id", "profile_id", "pool", "workflow_id", "platform_resource_id"]


class ProfileFilter(django_filters.FilterSet):
    pool = django_filters.CharFilter(field_name="pool__name")
    enabled = django_filters.BooleanFilter()
    region = django_filters.CharFilter()

    class Meta:
        model = Profile
        fields = ["pool", "enabled", "region"]
