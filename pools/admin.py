from django.contrib import admin, messages
from django.db.models import Count, Q

from assignments.actors import Actor
from assignments.admin import ServiceCheckedAdmin
from assignments.models import Assignment
from pools.models import AgentPool
from pools.services import pool_create, pool_update

_EDITABLE = ("platform", "region", "strategy", "heartbeat_timeout_seconds", "assignment_idle_timeout_seconds",
             "min_health_score")


@admin.register(AgentPool)
class AgentPoolAdmin(ServiceCheckedAdmin):
    list_display = ("name", "platform", "region", "strategy", "agent_count", "live_assignments", "waiting",
                    "heartbeat_timeout_seconds", "min_health_score")
    list_filter = ("platform", "strategy", "region")
    search_fields = ("name", "region")
    readonly_fields = ("created_at", "updated_at")
    actions = ("rotate_enrollment_token",)

    def get_queryset(self, request):
        live = Q(assignments__status__in=Assignment.LIVE_STATUSES)
        return super().get_queryset(request).annotate(
            _agents=Count("agents", distinct=True),
            _live=Count("assignments", filter=live, distinct=True),
            _waiting=Count("assignments", filter=Q(assignments__status="pending", assignments__agent__isnull=True), distinct=True),
        )

    @admin.display(ordering="_agents", description="agents")
    def agent_count(self, obj):
        return obj._agents

    @admin.display(ordering="_live", description="live assignments")
    def live_assignments(self, obj):
        return obj._live

    @admin.display(ordering="_waiting", description="waiting")
    def waiting(self, obj):
        return obj._waiting

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "name") if obj else self.readonly_fields

    def check_fields(self, data, obj):
        from pools.services import _check_pool_name, _clean_fields

        if obj is None and "name" in data:
            _check_pool_name(data["name"])
        _clean_fields({name: data[name] for name in _EDITABLE if name in data})

    def save_model(self, request, obj, form, change):
        actor = Actor.for_user(request.user)
        fields = {name: form.cleaned_data[name] for name in _EDITABLE}
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
