"""/analytics/ (server-drawn SVG charts from the rollups), /alerts/ (filters, acknowledge and resolve
for operators) and the CSV export of every dashboard table."""

import csv
import io

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents.services import agent_mark_stale
from assignments.alerts import alert_raise
from assignments.jobs import usage_rollup_recent
from assignments.models import Alert, Event
from assignments.services import assignment_create, profile_create
from config.actors import Actor
from config.errors import ProfileTaken
from dashboard import charts
from tests.dashboard.conftest import OPERATOR

pytestmark = pytest.mark.django_db

CHARTS = ("utilization", "conflicts", "failovers", "queue", "efficiency", "contention")


def _csv(response) -> list[dict]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def busy_scene(scene):
    """The dashboard scene plus a refused take of prof-0-0 and a failover (agent-0-0 marked stale), rolled up."""
    with pytest.raises(ProfileTaken):
        assignment_create(profile_id="prof-0-0", agent_id="agent-0-1", actor=OPERATOR)
    agent_mark_stale(agent_id="agent-0-0", actor=OPERATOR)
    usage_rollup_recent(actor=Actor.system("test-rollup"))
    return scene


def test_analytics_page_draws_every_chart_with_the_windows_numbers(viewer_client, busy_scene):
    response = viewer_client.get("/analytics/")
    assert response.status_code == 200
    html = response.content.decode()
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in html, chart
    assert "<script src=\"http" not in html and "cdn" not in html.lower()
    ctx = response.context
    assert ctx["totals"]["assignments"] == 2
    assert ctx["totals"]["conflicts"] == 1
    assert ctx["totals"]["failovers"] == 1
    assert [c["profile_id"] for c in ctx["contention"]] == ["prof-0-0"]
    assert {a["agent_id"] for a in ctx["agents"]} == {"agent-0-0", "agent-0-1"}
    assert 'data-live-types="assignment.,agent.,task.,queue."' in html


def test_analytics_page_costs_a_fixed_number_of_queries_and_refuses_bad_filters(viewer_client, busy_scene):
    with CaptureQueriesContext(connection) as ctx:
        assert viewer_client.get("/analytics/?range=7d&pool=pool-0").status_code == 200
    assert len(ctx.captured_queries) <= 20, [q["sql"][:120] for q in ctx.captured_queries]
    assert viewer_client.get("/analytics/?range=1y").status_code == 400
    assert viewer_client.get("/analytics/export/nope.csv").status_code == 404


def test_charts_scale_to_their_data_and_escape_labels():
    svg = charts.bar_ranking(chart_id="x", title="<t>", rows=[("<script>", 4), ("b", 2)], href="/profiles/")
    assert "<script>" not in svg.replace("<title", "").split("</title>", 1)[1]
    assert "&lt;script&gt;" in svg
    widths = [float(part.split('"')[0]) for part in svg.split('width="')[1:]]
    assert widths[0] > widths[1] > 0  # 4 draws a longer bar than 2
    empty = charts.bar_ranking(chart_id="y", title="None", rows=[])
    assert "Nothing to show" in empty


def test_alerts_page_filters_and_offers_operators_the_actions(viewer_client, operator, busy_scene):
    burst, _ = alert_raise(kind=Alert.Kind.CONFLICT_BURST, actor=OPERATOR, message="burst on prof-0-1",
                           pool="pool-0", profile_id="prof-0-1")
    html = viewer_client.get("/alerts/").content.decode()
    assert "burst on prof-0-1" in html and "agent-0-0" in html
    assert "/resolve/" not in html and "/acknowledge/" not in html
    only = viewer_client.get("/alerts/?kind=conflict_burst").context["page"].rows
    assert [a.alert_id for a in only] == [burst.alert_id]
    assert viewer_client.get("/alerts/?status=nope").status_code == 400
    operator_client = Client()
    operator_client.force_login(operator)
    html = operator_client.get("/alerts/").content.decode()
    assert f"/alerts/{burst.alert_id}/resolve/" in html and f"/alerts/{burst.alert_id}/acknowledge/" in html


def test_an_operator_resolves_an_alert_after_confirming(operator_client, busy_scene):
    alert = Alert.objects.get(kind=Alert.Kind.AGENT_STALE)
    url = f"/alerts/{alert.alert_id}/resolve/?next=/alerts/"
    confirm = operator_client.get(url)
    assert confirm.status_code == 200 and "Resolve alert?" in confirm.content.decode()
    alert.refresh_from_db()
    assert alert.status == "open"  # nothing happens before the confirmation
    response = operator_client.post(url, {"next": "/alerts/"})
    assert response.status_code == 302 and response["Location"] == "/alerts/"
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolved_by == "user:oper"
    assert Event.objects.filter(type="alert.resolved", data__alert_id=str(alert.alert_id)).exists()
    assert "resolved" in operator_client.get("/alerts/?status=resolved").content.decode()


def test_viewers_get_403_on_resolve(client, busy_scene, viewer):
    client.force_login(viewer)
    alert = Alert.objects.get(kind=Alert.Kind.AGENT_STALE)
    assert client.post(f"/alerts/{alert.alert_id}/resolve/").status_code == 403
    alert.refresh_from_db()
    assert alert.status == "open"


def test_every_table_exports_as_csv_with_its_filters(viewer_client, busy_scene):
    profile_create(profile_id="evil", name="=HYPERLINK(1)", actor=OPERATOR)
    live = _csv(viewer_client.get("/assignments/export.csv"))
    assert sorted(r["profile_id"] for r in live) == ["prof-0-0", "prof-0-1"]
    assert {r["agent_id"] for r in live} == {"agent-0-1"}  # both on agent-0-1 after the failover
    assert _csv(viewer_client.get("/assignments/export.csv?status=released")) == []
    agents = _csv(viewer_client.get("/agents/export.csv?status=stale"))
    assert [r["agent_id"] for r in agents] == ["agent-0-0"]
    (pool,) = _csv(viewer_client.get("/pools/export.csv"))
    assert (pool["name"], pool["agents"], pool["live"]) == ("pool-0", "2", "2")
    held = _csv(viewer_client.get("/profiles/export.csv?state=held"))
    assert sorted((r["profile_id"], r["held_by"]) for r in held) == [("prof-0-0", "agent-0-1"), ("prof-0-1", "agent-0-1")]
    everything = {r["profile_id"]: r for r in _csv(viewer_client.get("/profiles/export.csv"))}
    assert everything["evil"]["name"] == "'=HYPERLINK(1)"  # not run as a formula by a spreadsheet
    alerts = _csv(viewer_client.get("/alerts/export.csv"))
    assert [(r["kind"], r["agent_id"]) for r in alerts] == [("agent_stale", "agent-0-0")]
    series = _csv(viewer_client.get("/analytics/export/utilization.csv"))
    assert sum(int(r["assignments"]) for r in series) == 2 and sum(int(r["failovers"]) for r in series) == 1
    contention = _csv(viewer_client.get("/analytics/export/contention.csv"))
    assert [(r["profile_id"], r["conflicts"]) for r in contention] == [("prof-0-0", "1")]
    assert {r["agent_id"] for r in _csv(viewer_client.get("/analytics/export/agents.csv"))} == {"agent-0-0", "agent-0-1"}
    assert all(r["queue_depth"] == "0" for r in _csv(viewer_client.get("/analytics/export/tasks.csv")))
    assert viewer_client.get("/agents/export.csv?status=sleepy").status_code == 400


@pytest.mark.parametrize("url", ["/analytics/", "/alerts/", "/alerts/export.csv", "/pools/export.csv",
                                 "/analytics/export/agents.csv"])
def test_anonymous_visitors_are_sent_to_log_in(client, db, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_analytics_reads_cost_the_same_number_of_queries_whatever_the_fleet_size(viewer_client, db):
    """Rankings and series are grouped queries over the rollups: ten times the rows, the same queries."""
    from tests.dashboard.conftest import make_scene

    def count(url):
        with CaptureQueriesContext(connection) as ctx:
            response = viewer_client.get(url)
            assert response.status_code == 200, url
            if response.streaming:
                b"".join(response.streaming_content)
        return len(ctx.captured_queries)

    urls = ["/analytics/", "/alerts/?status=all", "/api/analytics/utilization", "/api/analytics/contention",
            "/api/analytics/agents", "/api/analytics/tasks", "/api/assignments/metrics", "/metrics"]
    make_scene(pools=1, agents=2, profiles=2, held=1, prefix="s-")
    usage_rollup_recent(actor=Actor.system("test-rollup"))
    small = {url: count(url) for url in urls}
    make_scene(pools=3, agents=5, profiles=10, held=10, prefix="l-")
    for agent_id in ("l-agent-0-0", "l-agent-1-0"):
        agent_mark_stale(agent_id=agent_id, actor=OPERATOR)
    usage_rollup_recent(actor=Actor.system("test-rollup"))
    large = {url: count(url) for url in urls}
    assert large == small
