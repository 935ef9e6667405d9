from config.api.converters import route
from pools.api import task_views, views

urlpatterns = [
    route("pools", views.PoolListCreateView.as_view(), "pool-list"),
    route("pools/(?P<name>{id})", views.PoolDetailView.as_view(), "pool-detail"),
    # Fixed words before `tasks/{task_id}` (a task id may not be one of them: pools.queue.RESERVED_TASK_IDS).
    route("tasks", task_views.TaskListSubmitView.as_view(), "task-list"),
    route("tasks/submit", task_views.TaskSubmitView.as_view(), "task-submit"),
    route("tasks/batch", task_views.TaskBatchView.as_view(), "task-batch"),
    route("tasks/status", task_views.TaskStatusView.as_view(), "task-status"),
    route("tasks/queues", task_views.QueuesView.as_view(), "task-queues"),
    route("tasks/queues/stats", task_views.QueueStatsView.as_view(), "task-queue-stats"),
    route("tasks/queues/(?P<priority>[a-z]{1,16})/clear", task_views.QueueClearView.as_view(), "task-queue-clear"),
    route("tasks/(?P<task_id>{id})", task_views.TaskDetailView.as_view(), "task-detail"),
    route("tasks/(?P<task_id>{id})/start", task_views.TaskStartView.as_view(), "task-start"),
    route("tasks/(?P<task_id>{id})/complete", task_views.TaskCompleteView.as_view(), "task-complete"),
    route("tasks/(?P<task_id>{id})/fail", task_views.TaskFailView.as_view(), "task-fail"),
    route("tasks/(?P<task_id>{id})/cancel", task_views.TaskCancelView.as_view(), "task-cancel"),
    route("agents/(?P<agent_id>{id})/tasks/claim", task_views.TaskClaimView.as_view(), "agent-task-claim"),
]
