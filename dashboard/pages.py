"""The operator dashboard's pages: thin views over `dashboard.selectors`.

Every page is plain server-rendered HTML that works without JavaScript. For live updates the page
carries the `seq` of the newest event it reflects (read before its data); static/tether-live.js
subscribes to the event stream from that `seq` and re-renders the page's live regions when a
relevant event arrives, so nothing committed after the render is missed.
"""

import csv
import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents.models import Agent
from pools.models import Task
from assignments.selectors import alert_list
from config.actors import user_is_operator
from dashboard import forms, selectors


def _render(request, template, context, *, live_types="", status=200):
    """Render a page with what every page needs: the operator flag, the live-update cursor."""
    context.setdefault("now", timezone.now())
    context.setdefault("is_operator", user_is_operator(request.user))
    context.setdefault("live_types", live_types)
    return render(request, template, context, status=status)


def _bad_filters(request, template, form, context=None, live_types=""):
    ctx = {"form": form, "bad_request": True, **(context or {})}
    return _render(request, template, ctx, live_types=live_types, status=400)


@login_required
@require_GET
def overview(request):
    seq = selectors.latest_seq()
    context = selectors.overview()
    alerts = alert_list(status="unresolved", limit=20)
    # A condition that already has an alert is shown once, as the alert (which can be acknowledged).
    alerted = {a.dedup_key for a in alerts}
    context["conditions"] = [c for c in context["conditions"] if c.dedup_key not in alerted]
    context.update({"alerts": alerts, "live_seq": seq})
    return _render(request, "dashboard/overview.html", context)


@login_required
@require_GET
def assignments(request):
    form = forms.AssignmentFilterForm(request.GET)
    pools = selectors.pool_names()
    ctx = {"form": form, "pools": pools, "statuses": form.fields["status"].choices, "sorts": list(selectors.ASSIGNMENT_SORTS)}
    if not form.is_valid():
        return _bad_filters(request, "dashboard/assignments.html", form, ctx, live_types="assignment.")
    seq = selectors.latest_seq()
    filters = form.filters()
    page = selectors.assignment_page(**filters, page=form.page_number())
    ctx.update({"page": page, "filters": filters, "live_seq": seq})
    return _render(request, "dashboard/assignments.html", ctx, live_types="assignment.")


@login_required
@require_GET
def agents(request):
    form = forms.AgentFilterForm(request.GET)
    ctx = {"form": form, "pools": selectors.pool_names(), "statuses": Agent.Status.choices}
    if not form.is_valid():
        return _bad_filters(request, "dashboard/agents.html", form, ctx, live_types="agent.,assignment.")
    seq = selectors.latest_seq()
    page = selectors.agent_page(pool=form.cleaned_data.get("pool") or "", status=form.cleaned_data.get("status") or "",
                                page=form.page_number())
    ctx.update({"page": page, "live_seq": seq})
    return _render(request, "dashboard/agents.html", ctx, live_types="agent.,assignment.")


@login_required
@require_GET
def agent_detail(request, agent_id):
    seq = selectors.latest_seq()
    detail = selectors.agent_detail(agent_id)
    if detail is None:
        raise Http404(f"agent {agent_id!r} does not exist")
    detail["live_seq"] = seq
    return _render(request, "dashboard/agent_detail.html", detail, live_types="agent.,assignment.")


@login_required
@require_GET
def pools(request):
    seq = selectors.latest_seq()
    return _render(request, "dashboard/pools.html",
                   {"rows": selectors.pool_rows(), "queued": selectors.queued_requests(), "live_seq": seq},
                   live_types="agent.,assignment.,pool.")


@login_required
@require_GET
def tasks(request):
    """Queues by priority per pool, and the tasks themselves (open ones by default), live."""
    form = forms.TaskFilterForm(request.GET)
    live_types = "task.,queue."
    ctx = {"form": form, "pools": selectors.pool_names(), "statuses": form.fields["status"].choices,
           "priorities": Task.Priority.choices}
    if not form.is_valid():
        return _bad_filters(request, "dashboard/tasks.html", form, ctx, live_types=live_types)
    seq = selectors.latest_seq()
    d = form.cleaned_data
    pool = d.get("pool") or ""
    ctx.update({
        "queues": selectors.queue_rows(pool=pool, names=ctx["pools"]),
        "page": selectors.task_page(pool=pool, status=d.get("status") or "", priority=d.get("priority") or "",
                                    page=form.page_number()),
        "live_seq": seq,
    })
    return _render(request, "dashboard/tasks.html", ctx, live_types=live_types)


@login_required
@require_GET
def profiles(request):
    form = forms.ProfileFilterForm(request.GET)
    ctx = {"form": form, "pools": selectors.pool_names()}
    if not form.is_valid():
        return _bad_filters(request, "dashboard/profiles.html", form, ctx, live_types="assignment.,profile.")
    seq = selectors.latest_seq()
    d = form.cleaned_data
    page = selectors.profile_page(q=d.get("q") or "", state=d.get("state") or "", pool=d.get("pool") or "",
                                  page=form.page_number())
    ctx.update({"page": page, "live_seq": seq})
    return _render(request, "dashboard/profiles.html", ctx, live_types="assignment.,profile.")


@login_required
@require_GET
def profile_detail(request, profile_id):
    form = forms.PageForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, "dashboard/profile_detail.html", form)
    seq = selectors.latest_seq()
    detail = selectors.profile_detail(profile_id, page=form.page_number())
    if detail is None:
        raise Http404(f"profile {profile_id!r} does not exist")
    detail["live_seq"] = seq
    return _render(request, "dashboard/profile_detail.html", detail, live_types="assignment.,profile.")


@login_required
@require_GET
def history(request):
    form = forms.HistoryFilterForm(request.GET)
    as_of_form = forms.AsOfForm(request.GET) if "as_of_profile" in request.GET else forms.AsOfForm()
    ctx = {"form": form, "as_of_form": as_of_form, "pools": selectors.pool_names(), "types": selectors.event_types()}
    as_of_bad = as_of_form.is_bound and not as_of_form.is_valid()
    if not form.is_valid() or as_of_bad:
        return _bad_filters(request, "dashboard/history.html", form, ctx)
    if as_of_form.is_bound:
        ctx["answer"] = selectors.holder_at(as_of_form.cleaned_data["as_of_profile"], as_of_form.cleaned_data["as_of"])
    seq = selectors.latest_seq()
    filters = form.filters()
    q = selectors.event_history_q(**filters)
    before, after = form.cleaned_data.get("before"), form.cleaned_data.get("after")
    ctx.update({
        "page": selectors.event_page(q, before=before, after=after),
        "live_seq": seq,
        # Only the newest page follows the log live; an older page stays where the reader put it.
        "live_paused": before is not None or after is not None,
        "export_query": request.GET.urlencode(),
    })
    return _render(request, "dashboard/history.html", ctx)


class _Echo:
    def write(self, value):
        return value


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


CSV_COLUMNS = ["seq", "occurred_at", "type", "actor", "assignment_id", "profile_id", "agent_id", "pool",
               "from_status", "to_status", "data"]


@login_required
@require_GET
def history_export(request):
    """The filtered event log as CSV, newest first, streamed in keyset chunks (memory stays flat)."""
    form = forms.HistoryFilterForm(request.GET)
    if not form.is_valid():
        ctx = {"form": form, "as_of_form": forms.AsOfForm(), "pools": selectors.pool_names(), "types": selectors.event_types()}
        return _bad_filters(request, "dashboard/history.html", form, ctx)
    q = selectors.event_history_q(**form.filters())
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for e in selectors.event_iter(q):
            yield writer.writerow([
                e.seq, e.occurred_at.isoformat().replace("+00:00", "Z"), e.type, _cell(e.actor),
                e.assignment_id or "", _cell(e.profile_id), _cell(e.agent_id), _cell(e.pool),
                e.from_status, e.to_status, _cell(json.dumps(e.data, sort_keys=True, separators=(",", ":"))),
            ])

    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="tether-events-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
