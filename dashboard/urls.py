from django.urls import path

from dashboard import actions, pages

urlpatterns = [
    path("", pages.overview, name="dash-overview"),
    path("assignments/", pages.assignments, name="dash-assignments"),
    path("assignments/<uuid:assignment_id>/release/", actions.assignment_force_release, name="dash-assignment-release"),
    path("agents/", pages.agents, name="dash-agents"),
    path("agents/<str:agent_id>/", pages.agent_detail, name="dash-agent"),
    path("agents/<str:agent_id>/drain/", actions.agent_drain_view, name="dash-agent-drain"),
    path("agents/<str:agent_id>/mark-stale/", actions.agent_mark_stale_view, name="dash-agent-mark-stale"),
    path("pools/", pages.pools, name="dash-pools"),
    path("profiles/", pages.profiles, name="dash-profiles"),
    path("profiles/<str:profile_id>/", pages.profile_detail, name="dash-profile"),
    path("profiles/<str:profile_id>/clear-quarantine/", actions.profile_quarantine_clear_view,
         name="dash-profile-clear-quarantine"),
    path("alerts/<uuid:alert_id>/acknowledge/", actions.alert_acknowledge_view, name="dash-alert-acknowledge"),
    path("tasks/", pages.tasks, name="dash-tasks"),
    path("tasks/queues/<str:priority>/clear/", actions.queue_clear_view, name="dash-queue-clear"),
    path("tasks/<str:task_id>/cancel/", actions.task_cancel_view, name="dash-task-cancel"),
    path("tasks/<str:task_id>/resubmit/", actions.task_resubmit_view, name="dash-task-resubmit"),
    path("history/", pages.history, name="dash-history"),
    path("history/export.csv", pages.history_export, name="dash-history-export"),
]
