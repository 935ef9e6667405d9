from assignments.api import views
from config.api.converters import route

urlpatterns = [
    route("profiles", views.ProfileListCreateView.as_view(), "profile-list"),
    route("profiles/(?P<profile_id>{id})", views.ProfileDetailView.as_view(), "profile-detail"),
    route("profiles/(?P<profile_id>{id})/assignment", views.ProfileAssignmentView.as_view(), "profile-assignment"),
    route("profiles/(?P<profile_id>{id})/release", views.ProfileReleaseView.as_view(), "profile-release"),
    route("profiles/(?P<profile_id>{id})/report", views.ProfileReportView.as_view(), "profile-report"),
    route("profiles/(?P<profile_id>{id})/clear-quarantine", views.ProfileQuarantineClearView.as_view(),
          "profile-clear-quarantine"),
    route("assignments", views.AssignmentListCreateView.as_view(), "assignment-list"),
    route("assignments/metrics", views.AssignmentMetricsView.as_view(), "assignment-metrics"),
    route("assignments/(?P<assignment_id>{uuid})", views.AssignmentDetailView.as_view(), "assignment-detail"),
    route("events", views.EventListView.as_view(), "event-list"),
    route("alerts", views.AlertListView.as_view(), "alert-list"),
    route("alerts/(?P<alert_id>{uuid})/acknowledge", views.AlertAcknowledgeView.as_view(), "alert-acknowledge"),
    route("alerts/(?P<alert_id>{uuid})/resolve", views.AlertResolveView.as_view(), "alert-resolve"),
]
