from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from assignments.alerts import alert_acknowledge, alert_resolve
from assignments.models import Alert, Assignment, Event, Profile
from assignments.profile_health import profile_quarantine_clear
from assignments.services import assignment_release, profile_clean_fields, profile_create, profile_update
from config.actors import Actor
from config.admin import ServiceCheckedAdmin, apply_to_each

_PROFILE_FIELDS = ("name", "pool", "tags", "region", "metadata", "enabled")


@admin.register(Profile)
class ProfileAdmin(ServiceCheckedAdmin):
    list_display = ("profile_id", "name", "pool", "region", "enabled", "health_score", "quarantined", "fencing_token",
                    "updated_at")
    list_filter = ("enabled", "quarantined", "pool", "region")
    actions = ("clear_quarantine",)
    search_fields = ("profile_id", "name")
    list_select_related = ("pool",)
    readonly_fields = ("fencing_token", "health_score", "successes", "failures", "captchas", "bans", "quarantined",
                       "quarantined_at", "quarantine_reason", "last_released_at", "created_at", "updated_at")
    fields = ("profile_id", "name", "pool", "tags", "region", "metadata", "enabled", *readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "profile_id") if obj else self.readonly_fields

    def check_fields(self, data, obj):
        profile_clean_fields({k: data[k] for k in _PROFILE_FIELDS if k in data})

    def save_model(self, request, obj, form, change):
        """Saves go through the services, so an admin edit leaves its event like any other change."""
        actor = Actor.for_user(request.user)
        fields = {name: form.cleaned_data[name] for name in _PROFILE_FIELDS}
        if change:
            saved = profile_update(profile_id=obj.profile_id, actor=actor, **fields)
        else:
            saved = profile_create(profile_id=form.cleaned_data["profile_id"], actor=actor, **fields)
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        return False  # profiles are disabled, not deleted: their history must stay readable

    @admin.action(description="Clear quarantine (may be handed out again)")
    def clear_quarantine(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("profile_id", flat=True), profile_quarantine_clear,
                      "profile_id", "Cleared the quarantine of")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("assignment_id", "profile", "agent", "pool", "status", "workflow_id", "fencing_token",
                    "assigned_at", "last_activity", "release_reason")
    list_filter = ("status", "pool", "release_reason")
    search_fields = ("assignment_id", "profile__profile_id", "agent__agent_id", "workflow_id", "platform_resource_id")
    list_select_related = ("profile", "agent", "pool")
    raw_id_fields = ("profile", "agent", "pool")
    date_hierarchy = "assigned_at"
    actions = ("force_release",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False  # agents take profiles through the API (or an operator through it)

    def has_change_permission(self, request, obj=None):
        # Read-only: a Save would rewrite the whole row behind the services' back (no lock, no event).
        # Changes go through the actions, which call the services.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Force-release selected assignments")
    def force_release(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("assignment_id", flat=True), assignment_release,
                      "assignment_id", "Released (or asked the agent to release)")


class NoCountPaginator(Paginator):
    """The event log is large: never COUNT(*) it for the admin's page links."""

    @cached_property
    def count(self):
        return 10**9


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("seq", "occurred_at", "type", "actor", "profile_id", "agent_id", "pool", "from_status", "to_status")
    list_filter = ("type",)
    search_fields = ("=profile_id", "=agent_id", "=pool", "=assignment_id", "=actor")
    paginator = NoCountPaginator
    show_full_result_count = False
    ordering = ("-seq",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Alerts are raised by the services; operators acknowledge and resolve them (through the services)."""

    list_display = ("raised_at", "severity", "kind", "status", "message", "pool", "agent_id", "profile_id",
                    "occurrences", "acknowledged_by")
    list_filter = ("status", "severity", "kind")
    search_fields = ("=pool", "=agent_id", "=profile_id", "message")
    ordering = ("-raised_at",)
    actions = ("acknowledge", "resolve")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # read-only like the event log: acknowledge and resolve are actions (services)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("alert_id", flat=True), alert_acknowledge,
                      "alert_id", "Acknowledged")

    @admin.action(description="Resolve selected alerts")
    def resolve(self, request, queryset):
        apply_to_each(self, request, queryset.values_list("alert_id", flat=True), alert_resolve,
                      "alert_id", "Resolved")
