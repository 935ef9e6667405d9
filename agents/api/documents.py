"""Agents as the API writes them (`AgentSerializer`), built by PostgreSQL as JSON text.

Why: discover answers up to 500 agents, and in Python each one cost a model object, six JSON
columns decoded, a dict written out and encoded again — ~7.6 ms of a worker's CPU for 100 agents
on the bench machine, against 1.5–3.4 for the memory-backed coordinator issue 15 measures Tether
against. Here the database writes each agent's object in the statement that finds it, and the
view passes the text on. The JSON columns go out as stored, and the rest as `AgentSerializer`
writes them: datetimes in UTC as ISO 8601 with "Z" and microseconds only when there are some, floats
always with a fraction or an exponent (1.0, not 1), nulls as null (tests/api/test_agent_documents.py
compares the two field by field, types included).

Where the database cannot say what Python would — the current time zone is not UTC, a JSON column
holds what the API never accepts (a list of numbers, an object where a list belongs: only an admin
can write that), a float that is not finite — these functions answer None and the caller serializes
in Python as before, so the answer never depends on which path wrote it.
"""

from __future__ import annotations

from django.db import connection
from django.utils import timezone

from agents import selectors

# Columns of the agent statements (agents/selectors.py: the fields by name, the pool's as `pool__name`), as `d`.
_LISTS = ("capabilities", "services", "tags")  # lists of texts (or nulls)
_OBJECTS = ("endpoints", "metadata", "load_metrics")  # objects
_FLOATS = ("weight", "health_score")


def _list_ok(column: str) -> str:
    return (f"jsonb_typeof(d.{column}) = 'array' AND NOT jsonb_path_exists(d.{column}, "
            "'strict $[*] ? (@.type() != \"string\" && @.type() != \"null\")')")


def _float(column: str) -> str:
    # float8's text is the shortest that reads back the same, as Python's repr; Python writes a
    # whole number as 1.0 where PostgreSQL writes 1.
    return f"(CASE WHEN d.{column}::text ~ '^-?[0-9]+$' THEN d.{column}::text || '.0' ELSE d.{column}::text END)::json"


def _datetime(column: str) -> str:
    utc = f"(d.{column} AT TIME ZONE 'UTC')"
    return (f"(CASE WHEN d.{column} IS NULL THEN 'null' ELSE '\"' || to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
            f"|| CASE WHEN to_char({utc}, 'US') = '000000' THEN '' ELSE '.' || to_char({utc}, 'US') END "
            f"|| 'Z\"' END)::json")


_OK = " AND ".join(
    [_list_ok(c) for c in _LISTS]
    + [f"jsonb_typeof(d.{c}) = 'object'" for c in _OBJECTS]
    + [f"d.{c} NOT IN ('Infinity'::float8, '-Infinity'::float8, 'NaN'::float8)" for c in _FLOATS]
)

_DOCUMENT = "json_build_object(" + ", ".join([
    "'agent_id', d.agent_id", "'pool', d.pool__name", "'agent_type', d.agent_type", "'status', d.status",
    "'capabilities', d.capabilities", "'services', d.services", "'endpoints', d.endpoints", "'tags', d.tags",
    "'metadata', d.metadata", "'version', d.version", "'region', d.region", "'capacity', d.capacity",
    "'task_capacity', d.task_capacity", f"'weight', {_float('weight')}", "'priority', d.priority",
    "'load_metrics', d.load_metrics", f"'health_score', {_float('health_score')}",
    f"'last_heartbeat', {_datetime('last_heartbeat')}", f"'registered_at', {_datetime('registered_at')}",
]) + ")"

# Each agent's document, or NULL where it must be written in Python (see above).
_DOCUMENTS = f"SELECT d.health_score, d.agent_id, k.ok, CASE WHEN k.ok THEN {_DOCUMENT} END AS doc " \
             f"FROM ({{agents}}) AS d CROSS JOIN LATERAL (SELECT {_OK} AS ok) AS k"


def _here() -> bool:
    return connection.vendor == "postgresql" and timezone.get_current_timezone_name() == "UTC"


def discover_document(**criteria) -> str | None:
    """The body of discover's answer for these criteria (`selectors.agent_discover`'s arguments) as
    JSON text — {"count", "next", "previous", "results"}, as `AgentListSerializer` — or None where
    it must be written in Python."""
    if not _here():
        return None
    statement = selectors.agent_discover_sql(**criteria)
    if statement is None:
        return None
    sql, params = statement
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(bool_and(ok), true), "
            "coalesce(json_agg(doc ORDER BY health_score DESC, agent_id), '[]')::text "
            f"FROM ({_DOCUMENTS.format(agents=sql)}) AS x",
            params,
        )
        count, ok, results = cursor.fetchone()
    if not ok:
        return None
    return f'{{"count":{count},"next":null,"previous":null,"results":{results}}}'


class NoSuchAgent(Exception):
    pass


def agent_document(agent_id: str) -> str | None:
    """The agent as get-agent answers it, as JSON text; None where it must be written in Python.
    Raises NoSuchAgent when there is no such agent."""
    if not _here():
        return None
    sql, params = selectors.agent_get_sql(agent_id)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ok, doc::text FROM ({_DOCUMENTS.format(agents=sql)}) AS x", params)
        row = cursor.fetchone()
    if row is None:
        raise NoSuchAgent(agent_id)
    ok, document = row
    return document if ok else None
