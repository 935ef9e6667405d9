"""CSV export of every dashboard table, with the page's own filters (the event log's is
`pages.history_export`): streamed, read in keyset chunks, cells a spreadsheet will not run as
formulas. A bad filter gets the page's 400."""

import csv
from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents.models import Agent
from assignments.models import Profile
from dashboard import forms, selectors
from dashboard.analytics_pages import analytics_context
from dashboard.pages import _bad_filters, _cell


class _Echo:
    def write(self, value):
        return value


def _text(value) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return _cell(",".join(str(v) for v in value))
    if value is None:
        return ""
    return _cell(value)


def csv_response(name: str, header: list[str], rows) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([_text(v) for v in row])

    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="tether-{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def assignments_export(request):
    form = forms.AssignmentFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, "dashboard/assignments.html", form, {"pools": selectors.pool_names()})
    qs = selectors.assignment_queryset(**form.filters())
    header = ["assignment_id", "profile_id", "agent_id", "pool", "workflow_id", "status", "assigned_at", "released_at",
              "last_activity", "fencing_token", "platform_resource_id", "release_reason"]
    return csv_response("assignments", header, (
        [a.assignment_id, a.profile.profile_id, a.agent.agent_id if a.agent_id else "", a.pool.name, a.workflow_id,
         a.status, a.assigned_at, a.released_at, a.last_activity, a.fencing_token, a.platform_resource_id,
         a.release_reason]
        for a in selectors.iter_by_pk(qs)))


@login_required
@require_GET
def agents_export(request):
    form = forms.AgentFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, "dashboard/agents.html", form, {"pools": selectors.pool_names()})
    qs = Agent.objects.select_related("pool")
    if form.cleaned_data.get("pool"):
        qs = qs.filter(pool__name=form.cleaned_data["pool"])
    if form.cleaned_data.get("status"):
        qs = qs.filter(status=form.cleaned_data["status"])
    header = ["agent_id", "pool", "agent_type", "status", "capacity", "weight", "priority", "health_score",
              "last_heartbeat", "registered_at", "region", "version", "capabilities", "tags"]
    return csv_response("agents", header, (
        [a.agent_id, a.pool.name, a.agent_type, a.status, a.capacity, a.weight, a.priority, a.health_score,
         a.last_heartbeat, a.registered_at, a.region, a.version, a.capabilities, a.tags]
        for a in selectors.iter_by_pk(qs)))


@login_required
@require_GET
def pools_export(request):
    rows = selectors.pool_rows()
    header = ["name", "platform", "region", "strategy", "agents", "healthy", "capacity", "live", "held", "waiting"]
    return csv_response("pools", header, (
        [r.pool.name, r.pool.platform, r.pool.region, r.pool.strategy, r.counts.agents, r.counts.healthy,
         r.counts.capacity, r.counts.live, r.counts.held, r.counts.waiting] for r in rows))


@login_required
@require_GET
def profiles_export(request):
    form = forms.ProfileFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, "dashboard/profiles.html", form, {"pools": selectors.pool_names()})
    d = form.cleaned_data
    qs = Profile.objects.select_related("pool")
    if d.get("q"):
        qs = qs.filter(Q(profile_id__startswith=d["q"]) | Q(name__icontains=d["q"]))
    if d.get("pool"):
        qs = qs.filter(pool__name=d["pool"])
    header = ["profile_id", "name", "pool", "region", "tags", "enabled", "held_by", "assignment_status"]

    def rows():
        for chunk in _chunks(selectors.iter_by_pk(qs), 2000):
            live = {a.profile_id: a for a in
                    selectors.assignment_queryset(status="live").filter(profile__in=[p.pk for p in chunk])}
            for p in chunk:
                a = live.get(p.pk)
                if (d.get("state") == "held" and a is None) or (d.get("state") == "available" and a is not None):
                    continue
                yield [p.profile_id, p.name, p.pool.name if p.pool_id else "", p.region, p.tags, p.enabled,
                       a.agent.agent_id if a is not None and a.agent_id else "", a.status if a is not None else ""]

    return csv_response("profiles", header, rows())


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@login_required
@require_GET
def alerts_export(request):
    form = forms.AlertFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, "dashboard/alerts.html", form, {"pools": selectors.pool_names()})
    header = ["alert_id", "kind", "severity", "status", "message", "pool", "agent_id", "profile_id", "assignment_id",
              "occurrences", "raised_at", "last_raised_at", "acknowledged_by", "acknowledged_at", "resolved_by",
              "resolved_at"]
    qs = selectors.alert_queryset(**form.filters())
    return csv_response("alerts", header, (
        [a.alert_id, a.kind, a.severity, a.status, a.message, a.pool, a.agent_id, a.profile_id, a.assignment_id,
         a.occurrences, a.raised_at, a.last_raised_at, a.acknowledged_by, a.acknowledged_at, a.resolved_by,
         a.resolved_at] for a in selectors.iter_by_pk(qs)))


ANALYTICS_TABLES = {
    "utilization": ["start", "assignments", "busy_seconds", "average_held", "utilization", "successes", "failures",
                    "expirations", "conflicts", "waits", "wait_seconds", "failovers"],
    "tasks": ["start", "enqueued", "dequeued", "queue_depth", "assigned", "average_wait_seconds", "completed", "failed",
              "cancelled", "expired"],
    "agents": ["agent_id", "pool", "assignments", "busy_seconds", "busy_share", "successes", "failures", "expirations",
               "failovers", "efficiency", "tasks_completed", "tasks_failed", "average_task_seconds"],
    "contention": ["profile_id", "conflicts", "waits", "wait_seconds", "failovers", "assignments", "busy_seconds"],
}


@login_required
@require_GET
def analytics_export(request, table):
    if table not in ANALYTICS_TABLES:
        raise Http404(f"no analytics table {table!r}")
    form = forms.AnalyticsFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, "dashboard/analytics.html", form, {"pools": selectors.pool_names()})
    seconds, bucket = form.window()
    data = analytics_context(seconds=seconds, bucket=bucket, pool=form.cleaned_data.get("pool") or "")
    rows = {"utilization": data["utilization"]["series"], "tasks": data["tasks"]["series"],
            "agents": data["agents"], "contention": data["contention"]}[table]
    header = ANALYTICS_TABLES[table]
    return csv_response(f"analytics-{table}", header, ([row[k] for k in header] for row in rows))

