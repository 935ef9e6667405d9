import django_filters

from agents.models import Agent
from config.api.filters import StrictFilterSet


class ChoiceInFilter(django_filters.BaseInFilter, django_filters.ChoiceFilter):
    """`?status=active,busy`"""


class AgentFilter(StrictFilterSet):
    pool = django_filters.CharFilter(field_name="pool__name")
    status = ChoiceInFilter(choices=Agent.Status.choices)
    agent_type = django_filters.ChoiceFilter(choices=Agent.AgentType.choices)
    region = django_filters.CharFilter()

    class Meta:
        model = Agent
        fields = ["pool", "status", "agent_type", "region"]
