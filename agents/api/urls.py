from agents.api import views
from config.api.converters import route

# `register` and `discover` come before `agents/{agent_id}`.
urlpatterns = [
    route("agents", views.AgentListView.as_view(), "agent-list"),
    route("agents/register", views.AgentRegisterView.as_view(), "agent-register"),
    route("agents/discover", views.AgentDiscoverView.as_view(), "agent-discover"),
    route("agents/(?P<agent_id>{id})", views.AgentDetailView.as_view(), "agent-detail"),
    route("agents/(?P<agent_id>{id})/heartbeat", views.AgentHeartbeatView.as_view(), "agent-heartbeat"),
    route("agents/(?P<agent_id>{id})/status", views.AgentStatusView.as_view(), "agent-status"),
    route("agents/(?P<agent_id>{id})/drain", views.AgentDrainView.as_view(), "agent-drain"),
    route("agents/(?P<agent_id>{id})/assignments", views.AgentAssignmentsView.as_view(), "agent-assignments"),
]
