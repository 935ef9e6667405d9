from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList

from config.actors import Actor
from config.admin import ServiceCheckedAdmin, apply_to_each
from pools.models import AgentPool, Task
from pools.queue import task_cancel, task_resubmit
from pools.selectors import PoolCounts, pool_counts
from pools.services import pool_check_name, pool_clean_fields, pool_create, pool_update

_EDITABLE = ("platform", "region", "strategy", "heartbeat_timeout_seconds", "assignment_idle_timeout_seconds",
             "min_health_score", "task_capacity", "conflict_policy", "preemption", "profile_cooldown_seconds",
             "profile_daily_quota")
# Added with tasks and with waits and guardrails (assignments/waits.py, guardrails.py): left empty,
# they keep the model's default, so a form (or a script) that predates them still creates a pool.
_OPTIONAL = ("task_capacity", "conflict_policy", "profile_cooldown_seconds", "profile_daily_quota")


class _CountedChangeList(ChangeList):
    """The page's pools with their counts attached (one `pool_counts` call per page)."""

    def get_results(self, request):
        super().get_results(request)
        counts = pool_counts([pool.pk for pool in self.result_list])
        for pool in self.result_list:
            pool.counts = counts.get(pool.pk, PoolCounts())


def _counts(pool) -> PoolCounts:
    return getattr(pool, "counts", None) or pool_counts([pool.pk]).get(pool.pk, PoolCounts())


@admin.register(AgentPool)
class AgentPoolAdmin(ServiceCheckedAdmin):
    list_display = ("name", "platform", "region", "strategy", "agent_count", "live_assignments", "waiting",
                    "queued_requests", "conflict_policy", "heartbeat_timeout_seconds", "min_health_score")
    list_filter = ("platform", "strategy", "region")
    search_fields = ("name", "region")
    readonly_fields = ("created_at", "updated_at")
    actions = ("rotate_enrollment_token",)

    def get_changelist(self, request, **kwargs):
        return _CountedChangeList

    # The counts of `pools.selectors.pool_counts`, the same the API and the dashboard show.
    @admin.display(description="agents")
    def agent_count(self, obj):
        return _counts(obj).agents

    @admin.display(description="live assignments")
    def live_assignments(self, obj):
        return _counts(obj).live

    @admin.display(description="waiting for an agent")
    def waiting(self, obj):
        return _counts(obj).waiting

    @admin.display(description="requests waiting for a profile")
    def queued_requests(self, obj):
        return _counts(obj).queued

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        for name in _OPTIONAL:
            if name in form.base_fields:
                form.base_fields[name].required = False
        return form

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "name") if obj else self.readonly_fields

    def check_fields(self, data, obj):
        if obj is None and "name" in data:
            pool_check_name(data["name"])
        pool_clean_fields({name: data[name] for name in _EDITABLE if data.get(name) not in (None, "")})

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        # Left empty, `task_capacity` keeps its value (the default of 1 for a new pool).
        fields = {name: form.cleaned_data[name] for name in _EDITABLE if form.cleaned_data.get(name) not in (None, "")}
        if change:
            saved, _ = pool_update(name=obj.name, actor=actor, **fields)
        else:
            saved, token = pool_create(name=form.cleaned_data["name"], actor=actor, **fields)
            self.message_user(
                request,
                f"Enrollment token for {saved.name} (shown once — agents send it as X-Enrollment-Token): {token}",
                messages.WARNING,
            )
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Issue a new enrollment token (the old one stops working)")
    def rotate_enrollment_token(self, request, queryset):
        actor = Actor.for_user(request.user)
        for name in queryset.values_list("name", flat=True):
            _, token = pool_update(name=name, actor=actor, rotate_enrollment_token=True)
            self.message_user(request, f"New enrollment token for {name} (shown once): {token}", messages.WARNING)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Read-only: tasks change through the services (the API, the dashboard, the action below)."""

    list_display = ("task_id", "pool", "priority", "status", "agent", "attempt", "max_attempts", "submitted_at",
                    "assigned_at", "finished_at")
    list_filter = ("status", "priority", "pool")
    search_fields = ("task_id", "agent__agent_id", "req_profile_id")
    list_select_related = ("pool", "agent")
    raw_id_fields = ("pool", "agent", "assignment")
    date_hierarchy = "submitted_at"
    actions = ("cancel", "resubmit")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # submitted through the API

    def has_change_permission(self, request, obj=None):
        return False  # a Save would bypass the services (no lock, no transition check, no event)

    def has_delete_permission(self, request, obj=None):
        return False  # ended tasks are history (dead letters an operator looks at)

    @admin.action(description="Cancel selected tasks (queued or assigned)")
    def cancel(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("task_id", flat=True), task_cancel, "task_id", "Cancelled")

    @admin.action(description="Resubmit selected tasks (failed, expired or cancelled) as new tasks")
    def resubmit(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("task_id", flat=True), task_resubmit, "task_id",
                      "Resubmitted")
