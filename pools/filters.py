import django_filters

from pools.models import AgentPool


class PoolFilter(django_filters.FilterSet):
    platform = django_filters.ChoiceFilter(choices=AgentPool.Platform.choices)
    region = django_filters.CharFilter()

    class Meta:
        model = AgentPool
        fields = ["platform", "region"]
