"""The event log page: search, keyset paging, the "as of" question and the CSV export."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.services import agent_drain
from assignments.models import Event
from assignments.services import assignment_create, assignment_release
from config.actors import Actor
from dashboard import selectors
from tests.dashboard.conftest import OPERATOR, make_scene

pytestmark = pytest.mark.django_db


def _csv(response):
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def _moments():
    """Time passes between events even on a fast machine: distinct timestamps for as-of checks."""
    return timezone.now()


def test_history_filters_by_profile_agent_pool_and_type(viewer_client, db):
    make_scene(pools=2)
    rows = viewer_client.get("/history/?profile_id=prof-1-0").context["page"].rows
    assert rows and {e.profile_id for e in rows} == {"prof-1-0"}
    rows = viewer_client.get("/history/?agent_id=agent-0-1").context["page"].rows
    assert rows and {e.agent_id for e in rows} == {"agent-0-1"}
    rows = viewer_client.get("/history/?pool=pool-1&type=assignment.*").context["page"].rows
    assert [e.type for e in rows] == ["assignment.created", "assignment.created"] and {e.pool for e in rows} == {"pool-1"}
    rows = viewer_client.get("/history/?type=agent.registered").context["page"].rows
    assert len(rows) == 4


def test_history_time_range(viewer_client, scene):
    newest = Event.objects.order_by("-seq").first()
    since = (newest.occurred_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert viewer_client.get(f"/history/?since={since}").context["page"].rows == []
    until = (newest.occurred_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert len(viewer_client.get(f"/history/?until={until}").context["page"].rows) == Event.objects.count()


def test_history_pages_by_seq_without_overlap(viewer_client, db):
    make_scene(agents=2, profiles=60, held=10)  # > 50 events
    total = Event.objects.count()
    assert total > 60
    first = viewer_client.get("/history/").context["page"]
    assert len(first.rows) == 50 and first.older and first.newer is None
    second = viewer_client.get(f"/history/?before={first.older}").context["page"]
    assert [e.seq for e in second.rows] == sorted((e.seq for e in second.rows), reverse=True)
    assert len(first.rows) + len(second.rows) == total
    assert max(e.seq for e in second.rows) < min(e.seq for e in first.rows)
    back = viewer_client.get(f"/history/?after={second.newer}").context["page"]
    assert [e.seq for e in back.rows] == [e.seq for e in first.rows]


def test_history_never_counts_the_event_table(operator_client, scene, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        operator_client.get("/history/?type=assignment.*")
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and "assignments_event" in q["sql"]]


def test_as_of_names_the_holder_at_each_moment(viewer_client, scene):
    # prof-0-0: agent-0-0 holds it (t1); agent-0-0 is drained so it moves to agent-0-1 (t2);
    # agent-0-1 releases it (t3); then it is free.
    t1 = _moments()
    agent_drain(agent_id="agent-0-0", actor=OPERATOR)
    t2 = _moments()
    moved = selectors.assignment_page(profile_id="prof-0-0").rows[0]
    assert moved.agent.agent_id == "agent-0-1"
    assignment_release(assignment_id=moved.assignment_id, actor=Actor.for_agent("agent-0-1"))
    t3 = _moments()

    assert selectors.holder_at("prof-0-0", t1).agent_id == "agent-0-0"
    at_t2 = selectors.holder_at("prof-0-0", t2)
    assert at_t2.agent_id == "agent-0-1" and at_t2.held and at_t2.event.type == "assignment.reassigned"
    at_t3 = selectors.holder_at("prof-0-0", t3)
    assert not at_t3.held and at_t3.event.type == "assignment.released"
    created = Event.objects.get(type="assignment.created", profile_id="prof-0-0").occurred_at
    before = selectors.holder_at("prof-0-0", created - timedelta(seconds=1))
    assert before.event is None and not before.held and before.exists


def test_as_of_answer_on_the_page(viewer_client, scene):
    at = timezone.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    response = viewer_client.get("/history/", {"as_of_profile": "prof-0-1", "as_of": timezone.now().isoformat()})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="as-of-answer"' in html and "agent-0-1" in html and "was held by" in html
    html = viewer_client.get("/history/", {"as_of_profile": "prof-0-3", "as_of": at[:19]}).content.decode()
    assert "never been assigned" in html
    html = viewer_client.get("/history/", {"as_of_profile": "nosuch", "as_of": at[:19]}).content.decode()
    assert "There is no profile" in html


def test_as_of_reads_a_naive_time_as_utc(viewer_client, scene):
    created = Event.objects.get(type="assignment.created", profile_id="prof-0-0").occurred_at
    naive = (created + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    answer = viewer_client.get("/history/", {"as_of_profile": "prof-0-0", "as_of": naive}).context["answer"]
    assert answer.agent_id == "agent-0-0"


def test_csv_export_streams_the_filtered_view(viewer_client, scene):
    response = viewer_client.get("/history/export.csv?type=assignment.created")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = _csv(response)
    assert [r["profile_id"] for r in rows] == ["prof-0-1", "prof-0-0"]
    assert {r["type"] for r in rows} == {"assignment.created"}
    assert rows[0]["agent_id"] == "agent-0-1" and rows[0]["actor"] == "system:test-setup"


def test_csv_export_of_everything_has_every_event_in_chunks(viewer_client, scene, monkeypatch):
    monkeypatch.setattr(selectors.event_iter, "__defaults__", (3,))  # chunks of 3: exercise the keyset loop
    rows = _csv(viewer_client.get("/history/export.csv"))
    assert [int(r["seq"]) for r in rows] == list(Event.objects.order_by("-seq").values_list("seq", flat=True))


def test_csv_cells_never_start_a_spreadsheet_formula():
    from dashboard.pages import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("+1") == "'+1" and _cell("@x") == "'@x" and _cell("-2") == "'-2"
    assert _cell("agent-1") == "agent-1" and _cell(None) == ""


def test_csv_export_requires_login(client, scene):
    assert client.get("/history/export.csv").status_code == 302
