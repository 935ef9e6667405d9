"""GET /metrics: the Prometheus text format (parsed with prometheus_client's own parser), values that
match a known scene, the bearer token, counters from the rollups plus the newer events, and request
histograms summed across processes in multiprocess mode."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agents.services import agent_mark_stale
from assignments.models import Event, UsageRollup
from assignments.services import assignment_create
from config.errors import ProfileTaken
from dashboard.metrics import counter_values
from tests.dashboard.conftest import OPERATOR

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        assert family.name.startswith("tether_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_gauges_and_counters_match_the_scene(client, scene):
    # scene: pool-0 with agent-0-0 and agent-0-1, four profiles, two held (active).
    with pytest.raises(ProfileTaken):
        assignment_create(profile_id="prof-0-0", agent_id="agent-0-1", actor=OPERATOR)
    agent_mark_stale(agent_id="agent-0-0", actor=OPERATOR)  # its assignment fails over to agent-0-1

    s = scrape(client)
    assert value(s, "tether_assignments_live", pool="pool-0", status="active") == 2
    assert value(s, "tether_assignments_live", pool="pool-0", status="pending") == 0
    assert value(s, "tether_assignments_waiting", pool="pool-0", waiting_for="agent") == 0
    assert value(s, "tether_assignments_waiting", pool="pool-0", waiting_for="profile") == 0
    assert value(s, "tether_agents", pool="pool-0", status="active") == 1
    assert value(s, "tether_agents", pool="pool-0", status="stale") == 1
    assert value(s, "tether_tasks_queued", pool="pool-0", priority="urgent") == 0
    assert value(s, "tether_alerts_open", kind="agent_stale", severity="warning") == 1
    assert value(s, "tether_assignment_takes_total", pool="pool-0") == 2
    assert value(s, "tether_assignment_conflicts_total", pool="pool-0") == 1
    assert value(s, "tether_assignment_failovers_total", pool="pool-0") == 1
    assert value(s, "tether_assignment_expiries_total", pool="pool-0") == 0
    assert value(s, "tether_tasks_total", pool="pool-0", outcome="completed") == 0


def test_request_latency_is_observed_per_route(client, scene):
    before = scrape(client)
    key = ("tether_http_request_duration_seconds_count", (("method", "GET"), ("route", "metrics"), ("status", "200")))
    s = scrape(client)
    assert s[key] == before.get(key, 0) + 1
    assert ("tether_http_request_duration_seconds_bucket",
            (("le", "+Inf"), ("method", "GET"), ("route", "metrics"), ("status", "200"))) in s


@override_settings(TETHER_METRICS_TOKEN="metrics-token-for-tests")
def test_a_set_token_is_required_as_a_bearer(client, db):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "Token metrics-token-for-tests"}):
        response = client.get("/metrics", **headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")
    scrape(client, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")


@override_settings(TETHER_ROLLUP_HOURS_BACK=2)
def test_counters_add_the_finished_rollup_hours_to_the_events_since(scene):
    now = timezone.now()
    cutoff = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    UsageRollup.objects.create(hour=cutoff - timedelta(hours=5), scope="pool", key="pool-0", assignments=40,
                               conflicts=3, failovers=2, expirations=1, tasks_completed=7)
    # Rolled up already: an event before the cut-off is not counted a second time.
    Event.objects.filter(type="assignment.created").order_by("seq").filter(
        seq=Event.objects.filter(type="assignment.created").order_by("seq").values("seq")[:1]
    ).update(occurred_at=cutoff - timedelta(minutes=1))
    totals = counter_values(now=now)
    assert totals[("tether_assignment_takes", "pool-0")] == 40 + 1
    assert totals[("tether_assignment_conflicts", "pool-0")] == 3
    assert totals[("tether_tasks", "pool-0", "completed")] == 7


def test_multiprocess_mode_sums_the_histograms_of_every_worker(client, db, tmp_path):
    code = ("import django; django.setup(); from dashboard.metrics import observe_request; "
            "observe_request('GET', 'api/assignments', 200, 0.02)")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="tests.settings",
               PYTHONPATH=str(ROOT))
    for _ in range(2):  # two worker processes, one request each
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
    with override_settings(TETHER_METRICS_MULTIPROC_DIR=str(tmp_path)):
        s = scrape(client)
    labels = (("method", "GET"), ("route", "api/assignments"), ("status", "200"))
    assert s[("tether_http_request_duration_seconds_count", labels)] == 2
    assert s[("tether_http_request_duration_seconds_bucket", (("le", "0.025"),) + labels)] == 2


def test_a_database_outage_is_a_503_not_a_500(client, db, monkeypatch):
    from django.db import OperationalError

    from dashboard import metrics

    def down(self):
        raise OperationalError("connection refused")

    monkeypatch.setattr(metrics.DatabaseCollector, "collect", down)
    response = client.get("/metrics")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"] == "5"


def test_an_assignment_failed_over_with_nowhere_to_go_is_waiting_for_an_agent(client, scene):
    for agent_id in ("agent-0-0", "agent-0-1"):
        agent_mark_stale(agent_id=agent_id, actor=OPERATOR)
    s = scrape(client)
    assert value(s, "tether_assignments_waiting", pool="pool-0", waiting_for="agent") == 2
    assert value(s, "tether_assignments_live", pool="pool-0", status="pending") == 2
    assert value(s, "tether_assignments_waiting", pool="pool-0", waiting_for="profile") == 0


def test_each_jobs_last_run_is_exposed_once_it_ran(client, db):
    from config.jobs import job_run

    s = scrape(client)
    assert not [k for k in s if k[0] == "tether_job_last_run_age_seconds"]  # nothing ran yet
    job_run("usage_rollup_recent")
    s = scrape(client)
    assert 0 <= value(s, "tether_job_last_run_age_seconds", job="usage_rollup_recent") < 60
    assert value(s, "tether_job_last_run_ok", job="usage_rollup_recent") == 1
