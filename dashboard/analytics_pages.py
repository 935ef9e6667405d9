"""The dashboard's /analytics/ (charts from the usage rollups, drawn as SVG on the server) and
/alerts/ (filters; acknowledge and resolve for operators, through dashboard/actions.py). Thin views
over `assignments.analytics` and `dashboard.selectors`; live like the other pages (tether-live.js
re-renders their [data-live] regions when a relevant event arrives, and every 30 s)."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.utils import timezone
from django.views.decorators.http import require_GET

from assignments import analytics
from assignments.models import Alert
from dashboard import charts, forms, selectors
from dashboard.pages import _bad_filters, _render

ANALYTICS_LIVE_TYPES = "assignment.,agent.,task.,queue."
ALERTS_LIVE_TYPES = "alert."
TOP = 10


def analytics_context(*, seconds: int, bucket: str, pool: str = "", now=None) -> dict:
    """Everything /analytics/ shows (and its CSV exports write) for a window back from now."""
    now = now or timezone.now()
    since = now - timedelta(seconds=seconds)
    util = analytics.utilization_series(bucket=bucket, since=since, until=now, pool=pool or None)
    tasks = analytics.task_series(bucket=bucket, since=since, until=now, pool=pool or None)
    agents = analytics.agent_ranking(since=since, until=now, pool=pool or None, limit=TOP)
    contention = analytics.contention_ranking(since=since, until=now, pool=pool or None, limit=TOP)
    return {"since": since, "until": now, "bucket": bucket, "utilization": util, "tasks": tasks, "agents": agents,
            "contention": contention}


def _charts(ctx: dict) -> list:
    util, tasks, bucket = ctx["utilization"]["series"], ctx["tasks"]["series"], ctx["bucket"]
    starts = [p["start"] for p in util]
    Series = charts.Series
    return [
        charts.time_chart(chart_id="utilization", title="Utilization (share of enabled profiles held)", starts=starts,
                          bucket=bucket, percent=True, y_max=1.0,
                          series=[Series("utilization", [p["utilization"] for p in util])]),
        charts.time_chart(chart_id="conflicts", title="Conflicts and waits", starts=starts, bucket=bucket,
                          series=[Series("conflicts", [p["conflicts"] for p in util], "bar"),
                                  Series("waits", [p["waits"] for p in util], "bar")]),
        charts.time_chart(chart_id="failovers", title="Failovers", starts=starts, bucket=bucket,
                          series=[Series("failovers", [p["failovers"] for p in util], "bar")]),
        charts.time_chart(chart_id="queue", title="Task queue depth", starts=[p["start"] for p in tasks],
                          bucket=bucket, series=[Series("queued", [p["queue_depth"] for p in tasks]),
                                                 Series("assigned", [p["assigned"] for p in tasks], "bar")]),
        charts.bar_ranking(chart_id="efficiency", title="Agent efficiency (busiest agents)", percent=True,
                           href="/agents/", rows=[(a["agent_id"], a["efficiency"]) for a in ctx["agents"]
                                                  if a["efficiency"] is not None]),
        charts.bar_ranking(chart_id="contention", title="Most contended profiles (refused takes)", href="/profiles/",
                           rows=[(c["profile_id"], c["conflicts"]) for c in ctx["contention"] if c["conflicts"]],
                           empty="No refused takes in this window."),
    ]


@login_required
@require_GET
def analytics_page(request):
    form = forms.AnalyticsFilterForm(request.GET)
    ctx = {"form": form, "pools": selectors.pool_names(), "ranges": list(forms.ANALYTICS_RANGES)}
    if not form.is_valid():
        return _bad_filters(request, "dashboard/analytics.html", form, ctx, live_types=ANALYTICS_LIVE_TYPES)
    seq = selectors.latest_seq()
    seconds, bucket = form.window()
    data = analytics_context(seconds=seconds, bucket=bucket, pool=form.cleaned_data.get("pool") or "")
    totals = {k: sum(p[k] for p in data["utilization"]["series"])
              for k in ("assignments", "conflicts", "failovers", "waits", "successes", "failures")}
    ctx.update(data | {"charts": _charts(data), "totals": totals, "live_seq": seq, "export_query": request.GET.urlencode(),
                       "range": form.cleaned_data.get("range") or "24h"})
    return _render(request, "dashboard/analytics.html", ctx, live_types=ANALYTICS_LIVE_TYPES)


@login_required
@require_GET
def alerts_page(request):
    form = forms.AlertFilterForm(request.GET)
    ctx = {"form": form, "pools": selectors.pool_names(), "kinds": Alert.Kind.choices,
           "severities": Alert.Severity.choices, "statuses": form.fields["status"].choices}
    if not form.is_valid():
        return _bad_filters(request, "dashboard/alerts.html", form, ctx, live_types=ALERTS_LIVE_TYPES)
    seq = selectors.latest_seq()
    filters = form.filters()
    ctx.update({"page": selectors.alert_page(**filters, page=form.page_number()), "filters": filters, "live_seq": seq,
                "export_query": request.GET.urlencode(), "here": request.get_full_path()})
    return _render(request, "dashboard/alerts.html", ctx, live_types=ALERTS_LIVE_TYPES)
