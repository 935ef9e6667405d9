"""Reads for the dashboard pages: a fixed number of queries whatever the data size."""

from django.db.models import Count

from agents.models import Agent
from assignments.models import Assignment, Event


def overview_counts() -> dict:
    assignments = dict(
        Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    agents = dict(Agent.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "assignment_counts": [(label, assignments.get(value, 0)) for value, label in Assignment.Status.choices if value in Assignment.LIVE_STATUSES],
        "agent_counts": [(label, agents.get(value, 0)) for value, label in Agent.Status.choices],
        "recent_events": list(Event.objects.order_by("-seq")[:20]),
    }
