import django_filters

from pools.models import AgentPool
from config.api.filters import StrictFilterSet


class PoolFilter(StrictFilterSet):
    platform = django_filters.ChoiceFilter(choices=AgentPool.Platform.choices)
    region = django_filters.CharFilter()

    class Meta:
        model = AgentPool
        fields = ["platform", "region"]
