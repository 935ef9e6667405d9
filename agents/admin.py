from django.contrib import admin

from agents.models import Agent
from agents.services import agent_clean_fields, agent_drain, agent_mark_stale, agent_update
from config.actors import Actor
from config.admin import ServiceCheckedAdmin, apply_to_each

_EDITABLE = ("agent_type", "capabilities", "services", "endpoints", "tags", "metadata", "version", "region",
             "capacity", "task_capacity", "weight", "priority")


@admin.register(Agent)
class AgentAdmin(ServiceCheckedAdmin):
    list_display = ("agent_id", "pool", "agent_type", "status", "health_score", "capacity", "last_heartbeat", "version", "region")
    list_filter = ("status", "agent_type", "pool", "region")
    search_fields = ("agent_id", "version")
    list_select_related = ("pool",)
    readonly_fields = ("agent_id", "pool", "status", "health_score", "load_metrics", "last_heartbeat", "registered_at",
                       "last_assigned_at")
    fields = (*readonly_fields, *_EDITABLE)
    actions = ("drain", "mark_stale")

    def has_add_permission(self, request):
        return False  # agents register themselves through the API with their pool's enrollment token

    def has_delete_permission(self, request, obj=None):
        return False  # drain or deregister instead: their assignments must fail over first

    def check_fields(self, data, obj):
        agent_clean_fields({name: data[name] for name in _EDITABLE if name in data})

    def save_model(self, request, obj, form, change):
        agent_update(agent_id=obj.agent_id, actor=Actor.for_user(request.user),
                     **{name: form.cleaned_data[name] for name in _EDITABLE if name in form.changed_data})

    @admin.action(description="Drain selected agents (move their assignments away)")
    def drain(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("agent_id", flat=True), agent_drain, "agent_id", "Drained")

    @admin.action(description="Mark selected agents stale (fail their assignments over)")
    def mark_stale(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("agent_id", flat=True), agent_mark_stale, "agent_id",
                      "Marked stale")
