"""`GET /metrics`: Tether in the Prometheus text format (prometheus_client), every name `tether_`.

Where each value comes from, and why — the answer must be the same whichever web process a scrape
reaches, and count what every web process and Celery worker did:
- **Gauges** (live assignments, agents, waiting requests, queued tasks, open alerts, the age of each
  background job's last run) are read from
  the database at scrape time: it is the truth every process shares. A few grouped queries.
- **Counters** (takes, conflicts, failovers, expiries, tasks by outcome) are derived from the event
  log, which every process writes: the hourly rollups (`UsageRollup`, pool rows) for the hours the
  rollup job has finished, plus the events since then counted directly (at most
  TETHER_ROLLUP_HOURS_BACK + 1 hours of them, on the `occurred_at` index). In-process counters would
  each see one process's share and reset on every restart; these survive restarts and are exact
  across any number of processes and machines. They stay monotonic while the rollup job runs (the
  hours before the cut-off were last rolled up after they ended); /health says when it does not.
  Every instance answers the same value: aggregate them with `max`, not `sum`, or scrape one.
- **Request latency histograms** (`tether_http_request_duration_seconds`) are per process by
  nature. With PROMETHEUS_MULTIPROC_DIR set (as `make serve` does), prometheus_client's
  multiprocess mode writes each worker's observations to that directory and a scrape sums the
  workers of this machine, so one scrape of one instance covers all its workers; with several
  machines, Prometheus scrapes each and `sum`s. Without it (embedded mode: one process), the
  process's own registry is exposed.
"""

import hmac
import logging
import time
from collections import defaultdict
from datetime import timedelta

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import sync_and_async_middleware
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from agents.models import Agent
from assignments.analytics import bucket_floor, event_counts, open_alert_counts
from assignments.models import Assignment, UsageRollup
from config.jobs import job_status
from pools.models import AgentPool, Task
from pools.selectors import pool_counts

log = logging.getLogger(__name__)

TASK_OUTCOMES = ("completed", "failed", "cancelled", "expired")

_PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    "tether_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route pattern and status code.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=_PROCESS_REGISTRY,
)


def observe_request(method: str, route: str, status: int | str, seconds: float) -> None:
    try:
        REQUEST_SECONDS.labels(method=method, route=route, status=str(status)).observe(seconds)
    except OSError:  # multiprocess mode's file could not be written (disk full, directory removed)
        log.warning("request latency not recorded (PROMETHEUS_MULTIPROC_DIR unwritable)", exc_info=True)


def _route(request) -> str:
    # The URL pattern, not the path: one series per endpoint whatever the ids in it.
    match = getattr(request, "resolver_match", None)
    return (match.route or match.view_name or "unmatched") if match else "unmatched"


@sync_and_async_middleware
def request_latency_middleware(get_response):
    """Times every request into `tether_http_request_duration_seconds` (outermost middleware)."""
    if iscoroutinefunction(get_response):
        async def middleware(request):
            started = time.perf_counter()
            response = await get_response(request)
            observe_request(request.method, _route(request), response.status_code, time.perf_counter() - started)
            return response
    else:
        def middleware(request):
            started = time.perf_counter()
            response = get_response(request)
            observe_request(request.method, _route(request), response.status_code, time.perf_counter() - started)
            return response
    return middleware


# --- Values read from the database at scrape time ----------------------------------------------------

# Counter name → (rollup column of the pool rows, help).
_COUNTERS = {
    "tether_assignment_takes": ("assignments", "Profiles taken: assignments created, and queued requests served."),
    "tether_assignment_conflicts": ("conflicts", "Refused takes: the profile was held."),
    "tether_assignment_failovers": ("failovers", "Assignments moved to another agent or to waiting (reassigned)."),
    "tether_assignment_expiries": ("expirations", "Assignments expired (idle timeout); a wait that ran out is not one."),
}
_TASK_COLUMNS = {"completed": "tasks_completed", "failed": "tasks_failed", "cancelled": "tasks_cancelled",
                 "expired": "tasks_expired"}


def counter_values(now=None) -> dict:
    """(counter name, pool[, outcome]) → total: the rollup job's pool rows for the hours it has
    finished, plus the events since, counted by the same rules (`assignments.analytics.event_counts`)."""
    now = now or timezone.now()
    cutoff = bucket_floor(now, "hour") - timedelta(hours=settings.TETHER_ROLLUP_HOURS_BACK)
    columns = [c for c, _ in _COUNTERS.values()] + list(_TASK_COLUMNS.values())
    per_pool: dict[str, dict] = defaultdict(lambda: dict.fromkeys(columns, 0))
    for row in (
        UsageRollup.objects.filter(scope=UsageRollup.Scope.POOL, hour__lt=cutoff)
        .values("key").annotate(**{c: Sum(c) for c in columns}).order_by()
    ):
        for column in columns:
            per_pool[row["key"]][column] += row[column] or 0
    recent = defaultdict(lambda: defaultdict(float))
    event_counts(cutoff, now + timedelta(hours=1), recent)
    for (scope, pool), values in recent.items():
        if scope == UsageRollup.Scope.POOL:
            for column in columns:
                per_pool[pool][column] += values[column]
    totals: dict[tuple, float] = {}
    for pool, values in per_pool.items():
        for name, (column, _) in _COUNTERS.items():
            totals[(name, pool)] = values[column]
        for outcome, column in _TASK_COLUMNS.items():
            totals[("tether_tasks", pool, outcome)] = values[column]
    return totals


def _queued_tasks(pool_names: list[str]) -> dict:
    """(pool, priority) → queued tasks, 0 where none (one grouped query)."""
    counts = {(pool, priority): 0 for pool in pool_names for priority in Task.Priority.values}
    for pool, priority, n in (
        Task.objects.filter(status=Task.Status.QUEUED).values_list("pool__name", "priority")
        .annotate(n=Count("pk")).order_by()
    ):
        counts[(pool, priority)] = n
    return counts


class DatabaseCollector:
    """The gauges and counters of the module docstring, read at each scrape (about ten queries)."""

    def collect(self):
        pools = dict(AgentPool.objects.values_list("pk", "name"))
        counts = pool_counts()
        live = GaugeMetricFamily("tether_assignments_live", "Live assignments by pool and status.",
                                 labels=["pool", "status"])
        waiting = GaugeMetricFamily(
            "tether_assignments_waiting",
            "Waiting requests by pool: for an agent (pending with no agent: failed over, no room) or for the "
            "profile (pending for a requesting agent: a take that asked to wait while the profile is held).",
            labels=["pool", "waiting_for"])
        agents = GaugeMetricFamily("tether_agents", "Registered agents by pool and status.", labels=["pool", "status"])
        for pk, name in sorted(pools.items(), key=lambda kv: kv[1]):
            c = counts.get(pk)
            for status in Assignment.LIVE_STATUSES:
                live.add_metric([name, status], c.live_by_status.get(status, 0) if c else 0)
            no_agent = c.waiting if c else 0
            waiting.add_metric([name, "agent"], no_agent)
            waiting.add_metric([name, "profile"], (c.live_by_status.get("pending", 0) - no_agent) if c else 0)
            for status in Agent.Status.values:
                agents.add_metric([name, status], c.agents_by_status.get(status, 0) if c else 0)
        yield live
        yield waiting
        yield agents

        queued = GaugeMetricFamily("tether_tasks_queued", "Queued tasks by pool and priority.",
                                   labels=["pool", "priority"])
        for (pool, priority), n in sorted(_queued_tasks(sorted(pools.values())).items()):
            queued.add_metric([pool, priority], n)
        yield queued

        alerts = GaugeMetricFamily("tether_alerts_open", "Unresolved alerts (open or acknowledged) by kind and severity.",
                                   labels=["kind", "severity"])
        for (kind, severity), n in sorted(open_alert_counts().items()):
            alerts.add_metric([kind, severity], n)
        yield alerts

        # The jobs: when each last finished, and whether that run succeeded. The counters above lean
        # on the rollup job (usage_rollup_recent): alert when it stops.
        age = GaugeMetricFamily("tether_job_last_run_age_seconds",
                                "Seconds since each background job last finished (absent: never ran).", labels=["job"])
        ok = GaugeMetricFamily("tether_job_last_run_ok", "1 when the job's last run succeeded, else 0.", labels=["job"])
        for name, job in sorted(job_status().items()):
            if job["age_seconds"] is not None:
                age.add_metric([name], job["age_seconds"])
                ok.add_metric([name], 1 if job["ok"] else 0)
        yield age
        yield ok

        totals = counter_values()
        for name, (_, help_text) in _COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=["pool"])
            for pool in sorted(set(pools.values()) | {k[1] for k in totals if k[0] == name and k[1]}):
                family.add_metric([pool], totals.get((name, pool), 0))
            yield family
        tasks = CounterMetricFamily("tether_tasks", "Tasks that ended, by pool and outcome (a failure that is "
                                    "retried is not an end).", labels=["pool", "outcome"])
        for pool in sorted(set(pools.values()) | {k[1] for k in totals if k[0] == "tether_tasks" and k[1]}):
            for outcome in TASK_OUTCOMES:
                tasks.add_metric([pool, outcome], totals.get(("tether_tasks", pool, outcome), 0))
        yield tasks


def scrape(accept: str = "") -> tuple[bytes, str]:
    """The exposition and its content type, in the format the scraper asks for (`Accept`: the text
    format by default, OpenMetrics when asked)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    if settings.TETHER_METRICS_MULTIPROC_DIR:
        MultiProcessCollector(registry, path=settings.TETHER_METRICS_MULTIPROC_DIR)
    else:
        registry.register(REQUEST_SECONDS)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _authorized(request) -> bool:
    token = settings.TETHER_METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request):
    if not _authorized(request):
        response = JsonResponse({"error": {"code": "not_authenticated",
                                           "message": "send Authorization: Bearer <TETHER_METRICS_TOKEN>",
                                           "details": {}}}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body, content_type = scrape(request.headers.get("Accept", ""))
    except DatabaseError as exc:
        # The gauges and counters come from the database: without it there is nothing true to say.
        # A 503 (not a 500) makes the scrape fail visibly (`up == 0`) and says why.
        response = JsonResponse({"error": {"code": "service_unavailable", "message": "the database is unavailable",
                                           "details": {"reason": type(exc).__name__}}}, status=503)
        response["Retry-After"] = "5"
        return response
    return HttpResponse(body, content_type=content_type)
