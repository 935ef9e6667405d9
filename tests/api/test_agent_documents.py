"""agents/api/documents.py: get-agent's and discover's answers written by PostgreSQL must say exactly
what AgentSerializer says — the same keys, values and JSON types — and fall back to it wherever the
database could not."""

import json
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from agents import selectors
from agents.api import documents
from agents.api.serializers import AgentSerializer
from agents.models import Agent

pytestmark = pytest.mark.postgres


def same(a, b, where="") -> None:
    """Equal and of the same JSON types all the way down (1.0 is not 1; a list is not a tuple)."""
    assert type(a) is type(b), (where, a, b)
    if isinstance(a, dict):
        assert set(a) == set(b), (where, sorted(a), sorted(b))  # the same keys (their order is not JSON's)
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def python_written(agent_id: str) -> dict:
    """What AgentSerializer writes, through the JSON the API sends."""
    return json.loads(json.dumps(AgentSerializer(selectors.agent_get(agent_id)).data))


@pytest.fixture
def varied_agents(make_agent):
    """Agents whose fields are written differently by Python and PostgreSQL unless taken care of."""
    make_agent("plain")
    make_agent("full", capabilities=["chrome", "octo"], services=["s"], endpoints={"http": "x", "n": {"a": [1, 2.5]}},
               tags=["eu"], metadata={"k": [1, {"n": None}], "ünï": "cödé ✓", "big": 2**62, "f": 0.1},
               version="1.2", region="eu-west", weight=2.5, priority=-3, load_metrics={"cpu": 12.5, "memory": 40},
               task_capacity=3)
    make_agent("whole-floats", weight=2.0, capabilities=["quote\"back\\slash"])
    make_agent("tiny-floats", weight=1.5e-07, load_metrics={"cpu": 99.999})
    make_agent("huge-weight", weight=1000.0)
    Agent.objects.filter(agent_id="plain").update(last_heartbeat=None, tags=["tab\tnewline\n", None])
    Agent.objects.filter(agent_id="whole-floats").update(
        health_score=0.0, last_heartbeat=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds
        registered_at=datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC))  # a few
    Agent.objects.filter(agent_id="tiny-floats").update(health_score=0.333333333333333314829616256247390992939472198486328125)
    Agent.objects.filter(agent_id="huge-weight").update(weight=1e16, health_score=1e-05)
    return ["plain", "full", "whole-floats", "tiny-floats", "huge-weight"]


def test_one_agent_written_by_postgresql_is_what_the_serializer_writes(varied_agents):
    for agent_id in varied_agents:
        document = documents.agent_document(agent_id)
        assert document is not None, agent_id
        same(json.loads(document), python_written(agent_id), agent_id)


def test_get_agent_answers_the_database_s_document(api, varied_agents, operator_token):
    for agent_id in varied_agents:
        response = api.get(f"/api/agents/{agent_id}", token=operator_token)
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        same(response.json(), python_written(agent_id), agent_id)
    missing = api.get("/api/agents/nobody", token=operator_token)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("criteria", [
    {}, {"limit": 2}, {"capabilities": ["chrome"]}, {"region": "eu-west", "status": "active"},
    {"pool": "k8s-prod", "min_health_score": 0.2}, {"agent_type": "provider"},  # the last: none
])
def test_discover_written_by_postgresql_is_what_the_serializer_writes(varied_agents, criteria):
    document = documents.discover_document(**criteria)
    assert document is not None
    results = [json.loads(json.dumps(AgentSerializer(a).data)) for a in selectors.agent_discover(**criteria)]
    same(json.loads(document), {"count": len(results), "next": None, "previous": None, "results": results})
    assert [a["agent_id"] for a in json.loads(document)["results"]] == [a["agent_id"] for a in results]


def test_discover_over_http_answers_the_database_s_document(api, varied_agents, operator_token):
    response = api.post("/api/agents/discover", {"limit": 3}, token=operator_token)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    results = [json.loads(json.dumps(AgentSerializer(a).data)) for a in selectors.agent_discover(limit=3)]
    same(response.json(), {"count": 3, "next": None, "previous": None, "results": results})


def test_what_only_an_admin_could_store_is_written_by_the_serializer(api, make_agent, operator_token):
    """A list of numbers where texts belong, an object where a list belongs: the database declines
    (None) and the answer is the serializer's, as before."""
    make_agent("odd")
    make_agent("fine")
    for change in ({"capabilities": [1, 2.5]}, {"tags": {"a": 1}}):
        Agent.objects.filter(agent_id="odd").update(**change)
        assert documents.agent_document("odd") is None
        assert documents.discover_document() is None  # one odd agent among the answer's: all in Python
        body = api.get("/api/agents/odd", token=operator_token).json()
        same(body, python_written("odd"))
        listed = api.post("/api/agents/discover", {}, token=operator_token).json()
        assert {a["agent_id"] for a in listed["results"]} == {"odd", "fine"}
        Agent.objects.filter(agent_id="odd").update(capabilities=[], tags=[], metadata={})
    assert documents.agent_document("odd") is not None
    assert api.get("/api/agents/odd", token=operator_token).json()["capabilities"] == []


def test_outside_utc_the_serializer_writes_it(varied_agents):
    with timezone.override("Europe/Berlin"):
        assert documents.agent_document("full") is None
        assert documents.discover_document() is None


def test_an_unknown_agent_is_no_document(db):
    with pytest.raises(documents.NoSuchAgent):
        documents.agent_document("nobody")


@pytest.mark.django_db
def test_discover_across_pools_reads_agents_in_answer_order_and_stops_at_the_limit():
    """Discover by status without a pool (the bench's and the usual "active agents that can do X"):
    PostgreSQL walks the status index in the answer's order and stops at the limit, rather than
    reading every matching agent of every pool and sorting them (issue 15: 2.4 ms of PostgreSQL's
    CPU a request over 5,000 agents before, 0.2 after)."""
    from django.db import connection

    from tests.helpers import make_pool

    pools = [make_pool("disc-a"), make_pool("disc-b")]
    Agent.objects.bulk_create(
        Agent(agent_id=f"d{i:04d}", pool=pools[i % 2], status="active" if i % 5 else "offline",
              capabilities=["chrome"] if i % 3 else ["firefox"], region="eu" if i % 2 else "us",
              health_score=(i % 10) / 10)
        for i in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE agents_agent")
        sql, params = selectors.agent_discover_sql(capabilities=["chrome"], status="active", region="eu", limit=20)
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "agents_agent_status_health_idx" in plan, plan
    assert "Sort" not in plan, plan
    body = json.loads(documents.discover_document(capabilities=["chrome"], status="active", region="eu", limit=20))
    expected = Agent.objects.filter(status="active", region="eu", capabilities__contains=["chrome"]).order_by(
        "-health_score", "agent_id")[:20]
    assert [a["agent_id"] for a in body["results"]] == [a.agent_id for a in expected]
