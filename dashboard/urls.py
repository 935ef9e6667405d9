from django.urls import path

from dashboard import actions, pages

urlpatterns = [
    path("", pages.overview, name="overview"),
    path("assignments/", pages.assignments, name="assignments"),
    path("assignments/<uuid:assignment_id>/release/", actions.assignment_force_release, name="assignment-release"),
    path("agents/", pages.agents, name="agents"),
    path("agents/<str:agent_id>/", pages.agent_detail, name="agent"),
    path("agents/<str:agent_id>/drain/", actions.agent_drain_view, name="agent-drain"),
    path("agents/<str:agent_id>/mark-stale/", actions.agent_mark_stale_view, name="agent-mark-stale"),
    path("pools/", pages.pools, name="pools"),
    path("profiles/", pages.profiles, name="profiles"),
    path("profiles/<str:profile_id>/", pages.profile_detail, name="profile"),
    path("alerts/<uuid:alert_id>/acknowledge/", actions.alert_acknowledge_view, name="alert-acknowledge"),
    path("history/", pages.history, name="history"),
    path("history/export.csv", pages.history_export, name="history-export"),
]
