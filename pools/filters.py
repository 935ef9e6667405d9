import django_filters

from config.api.filters import StrictFilterSet
from pools.models import AgentPool, Task


class PoolFilter(StrictFilterSet):
    platform = django_filters.ChoiceFilter(choices=AgentPool.Platform.choices)
    region = django_filters.CharFilter()

    class Meta:
        model = AgentPool
        fields = ["platform", "region"]


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """`?status=queued,assigned`"""


class TaskFilter(StrictFilterSet):
    status = ChoiceInFilter(choices=Task.Status.choices, help_text="one status or a comma-separated list")
    priority = ChoiceInFilter(choices=Task.Priority.choices, help_text="one priority or a comma-separated list")
    pool = django_filters.CharFilter(field_name="pool__name")
    agent_id = django_filters.CharFilter(field_name="agent__agent_id")

    class Meta:
        model = Task
        fields = ["status", "priority", "pool", "agent_id"]
