"""Lists do a fixed number of queries whatever the page size; the hot paths a pinned number."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assignments.services import assignment_create
from tests.api.conftest import SYSTEM
from pools.models import Task
from tests.helpers import orm_compiles


def _count(fn) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = fn()
    assert response.status_code == 200, response.content[:300]
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "path",
    ["/api/pools", "/api/agents", "/api/profiles", "/api/assignments", "/api/agents/a0/assignments?status=all", "/api/events"],
)
def test_list_query_count_does_not_grow_with_the_page(api, make_agent, make_profile, operator_token, path):
    make_agent("a0", capacity=100)

    def grow(n):
        from pools.services import pool_create

        start = len(__import__("agents.models", fromlist=["Agent"]).Agent.objects.all())
        for i in range(start, start + n):
            make_agent(f"a{i}")
            make_profile(f"p{i}")
            pool_create(name=f"pool-{i}", actor=SYSTEM)
            a = assignment_create(profile_id=f"p{i}", agent_id="a0", actor=SYSTEM)
            if i % 2:
                from assignments.services import assignment_release

                assignment_release(assignment_id=a.assignment_id, actor=SYSTEM)

    grow(2)
    small = _count(lambda: api.get(path, token=operator_token))
    grow(20)
    large = _count(lambda: api.get(path, token=operator_token))
    assert large == small


def test_assignment_list_query_count_is_pinned(api, make_agent, make_profile, operator_token, django_assert_num_queries):
    make_agent("a1")
    make_profile("p1")
    assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    # token + count + page
    with django_assert_num_queries(3):
        api.get("/api/assignments?status=active", token=operator_token)


def test_profile_lookup_query_count(api, make_agent, make_profile, django_assert_num_queries):
    _, token = make_agent("a1")
    make_profile("p1")
    make_profile("p2")
    assignment_create(profile_id="p1", agent_id="a1", actor=SYSTEM)
    # token + the live assignment with its profile, pool and agent
    with django_assert_num_queries(2):
        assert api.get("/api/profiles/p1/assignment", token=token).json()["available"] is False
    # token + no live assignment + does the profile exist
    with django_assert_num_queries(3):
        assert api.get("/api/profiles/p2/assignment", token=token).json()["available"] is True


@pytest.mark.postgres  # counts PostgreSQL's event-order lock, which SQLite does not need
def test_take_query_count(api, make_agent, make_profile, django_assert_num_queries):
    _, token = make_agent("a1")
    make_profile("p1")
    # token; then the service's transaction (a savepoint pair inside the test's transaction, BEGIN and
    # COMMIT in production): lock agent, lock profile, capacity count and live holder with the
    # fencing token's bump (one statement), insert, event lock and numbers, event insert.
    with django_assert_num_queries(9):
        assert api.post("/api/assignments", {"profile_id": "p1"}, token=token).status_code == 201


@pytest.mark.postgres
def test_release_query_count(api, make_agent, make_profile, django_assert_num_queries):
    _, token = make_agent("a1")
    make_profile("p1")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    # token; (savepoint pair) lock assignment and its profile, with its pool and agent (narrow),
    # update, mark the profile released and ask whether any request is queued for it (hand-over; one
    # statement), event lock and numbers, event insert
    with django_assert_num_queries(8):
        assert api.delete(f"/api/assignments/{a['assignment_id']}", token=token).status_code == 200


def test_heartbeat_query_count(api, make_agent, make_profile, django_assert_num_queries):
    _, token = make_agent("a1")
    make_profile("p1")
    a = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
    # token; (savepoint pair) lock and update the agent (one statement on PostgreSQL, two on SQLite),
    # held assignments with "any open task?" (one statement on PostgreSQL, the probe after the
    # transaction on SQLite), renew their activity (the reply's "tasks", DESIGN.md: none here)
    with django_assert_num_queries(6 if connection.vendor == "postgresql" else 8):
        response = api.post(
            "/api/agents/a1/heartbeat", {"load_metrics": {"cpu": 20}, "assignments": [a["assignment_id"]]}, token=token
        )
    assert response.json()["revoked"] == [] and response.json()["assigned"] == []


def test_agent_token_lookup_is_one_narrow_query_and_an_old_token_dies_at_once(api, make_agent, pool, django_assert_num_queries):
    from agents.services import agent_register

    _, old = make_agent("a1")
    # token (agent id and pool name only), then the agent read by the view
    with django_assert_num_queries(2):
        assert api.get("/api/agents/a1", token=old).status_code == 200
    _, new = agent_register(pool=pool, agent_id="a1", actor=SYSTEM)
    assert api.get("/api/agents/a1", token=old).status_code == 401  # no cache may keep it alive
    assert api.get("/api/agents/a1", token=new).status_code == 200


def test_registering_an_idle_agent_again_costs_the_same_in_a_big_pool(api, make_agent, pool, enrollment_token):
    """Failover of an agent that holds nothing must not lock and load every agent of the pool."""

    def reregister() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = api.post("/api/agents/register", {"agent_id": "again", "pool": pool.name},
                                headers={"X-Enrollment-Token": enrollment_token})
        assert response.status_code in (200, 201), response.content[:300]
        return len(ctx.captured_queries)

    make_agent("again")
    reregister()
    small = reregister()
    for i in range(30):
        make_agent(f"other-{i}")
    with CaptureQueriesContext(connection) as ctx:
        assert reregister() == small
    assert not any("FOR UPDATE" in q["sql"] and "agents_agent" in q["sql"] and '"status" = ' in q["sql"]
                   for q in ctx.captured_queries)


@pytest.mark.postgres
def test_a_registration_compiles_no_select(api, make_agent, pool, enrollment_token, monkeypatch):
    """Its reads — the pool by name, the agent's pool, the agent's row lock, "does it hold
    anything?" — are statements built once (config/sql.py, config/locks.py): compiling them with the
    ORM cost more than running them (register −30–40% CPU in process). Only its writes compile."""
    from django.db.models.sql.compiler import SQLCompiler

    compiled = []
    as_sql = SQLCompiler.as_sql

    def counting(self, *args, **kwargs):
        sql, params = as_sql(self, *args, **kwargs)
        compiled.append(sql)
        return sql, params

    def register(agent_id):
        response = api.post("/api/agents/register", {"agent_id": agent_id, "pool": pool.name},
                            headers={"X-Enrollment-Token": enrollment_token})
        assert response.status_code in (200, 201), response.content[:300]

    make_agent("again")
    register("again")  # whatever is compiled once, compiled now
    register("first-0")
    monkeypatch.setattr(SQLCompiler, "as_sql", counting)  # SELECTs (inserts and updates have their own)
    register("again")
    register("first-1")
    assert compiled == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_registration_s_after_commit_work_compiles_no_select(api):
    """As in production, its own transaction: what runs after COMMIT (the event consumers: task
    dispatch asks whether the pool has queued tasks) is built once too, and so are its writes (the
    agent's INSERT or UPDATE: config/sql.py)."""
    from pools.services import pool_create

    pool, enrollment = pool_create(name="reg", actor=SYSTEM)

    def register(agent_id):
        response = api.post("/api/agents/register", {"agent_id": agent_id, "pool": "reg"},
                            headers={"X-Enrollment-Token": enrollment})
        assert response.status_code in (200, 201), response.content[:300]

    register("again")
    register("again")  # whatever is compiled once, compiled now
    register("first-0")
    with orm_compiles() as compiled:
        register("again")
        register("first-1")
    assert compiled == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_idempotent_take_compiles_nothing(api, make_agent, make_profile):
    """The Idempotency-Key's claim (its expired row deleted, the claim inserted) and its stored
    answer are statements built once, as the take's own are: a first request compiles nothing,
    after-commit work included (it fails with the ORM's delete/create/update, three compiles a
    take). A retry's read of the stored answer is the ORM's: retries are rare."""
    _, token = make_agent("a1")
    make_profile("p1")
    def take_and_release(key):
        taken = api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": key})
        assert taken.status_code == 201, taken.content[:300]
        assert api.delete(f"/api/assignments/{taken.json()['assignment_id']}", token=token).status_code == 200
        return taken

    take_and_release("warm-1")  # whatever is compiled once, compiled now
    with orm_compiles() as compiled:
        taken = take_and_release("k-2")
    assert compiled == []
    # A retry (rare: the answer was lost on the way) is answered from the stored row, as before.
    again = api.post("/api/assignments", {"profile_id": "p1"}, token=token, headers={"Idempotency-Key": "k-2"})
    assert again.json() == taken.json() and again["Idempotent-Replayed"] == "true"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_take_and_release_statements_as_in_production(api, make_agent, make_profile):
    """Every statement a take and a release send, after-commit work included, as they run in
    production (their own transaction; the event rows numbered by COMMIT's trigger)."""
    _, token = make_agent("a1")
    make_profile("p1")

    def statements(fn) -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            response = fn()
        assert response.status_code in (200, 201), response.content[:300]
        return [q["sql"] for q in ctx.captured_queries]

    take = statements(lambda: api.post("/api/assignments", {"profile_id": "p1"}, token=token))
    # token; BEGIN, lock agent, lock profile, count and holder with the fencing token's bump (one),
    # insert, event insert, COMMIT; after it: the event numbers with the profile's holder (one).
    assert len(take) == 9, "\n".join(s[:150] for s in take)
    assert take[4].startswith("WITH bump AS (UPDATE assignments_profile SET fencing_token")
    assert "currval" in take[-1] and "LEFT JOIN LATERAL" in take[-1]
    assert not any("pg_advisory_xact_lock" in sql for sql in take)  # taken inside COMMIT instead
    assignment_id = api.get("/api/assignments?profile_id=p1", token=token).json()["results"][0]["assignment_id"]
    release = statements(lambda: api.delete(f"/api/assignments/{assignment_id}", token=token))
    # token; BEGIN, lock assignment and profile, update, mark the profile released and "any request
    # queued for it?" (hand-over) in one statement, event insert, COMMIT; after it: event numbers
    # with the profile's holder (one), "does anything wait in the pool?" (rebalance on freed room).
    assert len(release) == 9, "\n".join(s[:150] for s in release)
    assert "FOR UPDATE OF a, p" in release[2] and "RETURNING EXISTS" in release[4]


def _registration_statements(api, pool, enrollment_token, agent_id) -> list[str]:
    """Every statement an agent's registration with its pool's enrollment token sends (201)."""
    with CaptureQueriesContext(connection) as ctx:
        response = api.post("/api/agents/register", {"agent_id": agent_id, "pool": pool.name},
                            headers={"X-Enrollment-Token": enrollment_token})
    assert response.status_code == 201, response.content[:300]
    return [q["sql"] for q in ctx.captured_queries]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_registration_statements_as_in_production(api, pool, enrollment_token):
    """A registration into a pool where nothing waits for an agent and no "no healthy agent" alert
    is open opens no second transaction to rebalance the pool: one statement asks."""

    def register(agent_id) -> list[str]:
        return _registration_statements(api, pool, enrollment_token, agent_id)

    register("warm")
    for agent_id in ("first", "first"):  # a first registration, then the same agent again
        statements = register(agent_id)
        assert statements.count("BEGIN") == 1, "\n".join(s[:150] for s in statements)
        assert sum("pg_advisory_xact_lock" in sql for sql in statements) == 1  # the pool's move lock, once
        assert any("assignments_alert" in sql and "EXISTS" in sql for sql in statements)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_statement_run_often_is_prepared_on_its_connection(api, make_agent, make_profile):
    from django.db import connection

    _, token = make_agent("a1")
    make_profile("p1")
    for _ in range(6):
        taken = api.post("/api/assignments", {"profile_id": "p1"}, token=token).json()
        assert api.delete(f"/api/assignments/{taken['assignment_id']}", token=token).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("token_hash" in sql for sql in prepared), prepared  # every request's token lookup
    assert any("FOR UPDATE OF a, p" in sql for sql in prepared), prepared  # the release's lock


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_waiting_take_and_hand_over_statements_as_in_production(api, make_agent, make_profile):
    """Issue 12's contended path, as it runs in production: a take that waits for a held profile,
    and the release that hands the profile over to it."""
    _, holder_token = make_agent("a1")
    _, waiter_token = make_agent("a2")
    _, busy_token = make_agent("a3")
    make_profile("p1")
    make_profile("p2")

    def statements(fn) -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            response = fn()
        assert response.status_code in (200, 201, 202), response.content[:300]
        return [q["sql"] for q in ctx.captured_queries]

    held = api.post("/api/assignments", {"profile_id": "p1"}, token=holder_token).json()
    wait = statements(lambda: api.post("/api/assignments", {"profile_id": "p1", "wait_seconds": 30}, token=waiter_token))
    # An agent holding nothing (no cycle can run through it): token; BEGIN, lock agent, lock profile
    # (each one named statement with its pool), the holder, the agent's live count, insert, queue
    # position, event insert, COMMIT; after it: event numbers with the holder (one).
    assert len(wait) == 11, "\n".join(s[:150] for s in wait)
    assert not any("advisory" in sql for sql in wait)  # the wait graph is neither locked nor read
    assert wait[2].startswith("SELECT t.id") and "FOR UPDATE OF t" in wait[2] and "FOR UPDATE OF t" in wait[3]
    # An agent holding a profile: as above, and "already waiting for it?", the wait-graph lock (asked
    # for without waiting; the event order's is taken in COMMIT) and the graph's two reads.
    api.post("/api/assignments", {"profile_id": "p2"}, token=busy_token)
    busy_wait = statements(lambda: api.post("/api/assignments", {"profile_id": "p1", "wait_seconds": 30}, token=busy_token))
    assert len(busy_wait) == 15, "\n".join(s[:150] for s in busy_wait)
    assert sum("pg_try_advisory_xact_lock" in sql for sql in busy_wait) == 1
    assert not any("pg_advisory_xact_lock" in sql for sql in busy_wait)
    request_id = next(a["assignment_id"] for a in api.get("/api/assignments?profile_id=p1&status=pending",
                                                            token=waiter_token).json()["results"] if a["agent_id"] == "a2")

    release = statements(lambda: api.delete(f"/api/assignments/{held['assignment_id']}", token=holder_token))
    # token; BEGIN, lock assignment and profile, update, mark the profile released and "any request
    # queued?" (one statement), the profile with its pool (named), the freed holder's pool (the
    # profile has none), the next request (locked, SKIP LOCKED), the profile's new token, the request
    # → active, both events (one insert), COMMIT; after it: event numbers, the pool's rebalance probe.
    # Nothing asks again whether the profile is held: the assignment that ended was its holder.
    assert len(release) == 14, "\n".join(s[:150] for s in release)
    assert sum("SKIP LOCKED" in sql for sql in release) == 1
    assert not any("assignments_assignment" in sql and "'active', 'idle', 'releasing'" in sql and "SKIP" not in sql
                   for sql in release[:-2]), "\n".join(s[:150] for s in release)
    request = api.get(f"/api/assignments/{request_id}", token=waiter_token).json()
    assert (request["status"], request["fencing_token"]) == ("active", held["fencing_token"] + 1)


@pytest.mark.postgres
def test_a_claim_reads_its_agent_s_held_count_without_compiling_it(api, make_agent):
    """Every claim, and every look of a long-polling one, counts the tasks its agent holds: a
    statement built once (pools/dispatch.py). It fails with the ORM's per-call query."""
    _, token = make_agent("w1")

    def claim():
        response = api.post("/api/agents/w1/tasks/claim", {"max": 2}, token=token)
        assert response.status_code == 200, response.content[:300]

    claim()  # whatever is compiled once, compiled now
    with orm_compiles() as compiled:
        claim()
    assert not [sql for sql, _ in compiled if "COUNT(" in sql.upper()], compiled


@pytest.mark.postgres
def test_a_full_agent_s_claim_compiles_nothing_and_names_its_task_s_assignment(api, make_agent, make_profile,
                                                                                operator_token):
    """An agent at its task capacity claims what it was given: its lock, its held count and its
    assigned tasks with their assignments are statements built once (pools/dispatch.py), and the
    answer carries the profile-backed task's assignment and fencing token, as the ORM's read did."""
    from assignments.models import Assignment

    _, token = make_agent("w1", task_capacity=1)
    make_profile("p-task")
    submitted = api.post("/api/tasks", {"task_id": "t1", "pool": "k8s-prod", "payload": {},
                                         "requirements": {"profile_id": "p-task"}},
                         token=operator_token)
    assert submitted.status_code == 201, submitted.content[:300]

    def claim():
        response = api.post("/api/agents/w1/tasks/claim", {"max": 2}, token=token)
        assert response.status_code == 200, response.content[:300]
        return response.json()["tasks"]

    assert [t["task_id"] for t in claim()] == ["t1"]  # placed now (and whatever is compiled once, compiled)
    with orm_compiles() as compiled:
        (task,) = claim()
    assert compiled == []
    assignment = Assignment.objects.get(assignment_id=task["assignment_id"])
    assert (task["agent_id"], task["pool"], task["fencing_token"]) == ("w1", "k8s-prod", assignment.fencing_token)
    assert assignment.profile.profile_id == "p-task" and assignment.agent.agent_id == "w1"


@pytest.mark.postgres
def test_a_claim_that_reads_the_queue_compiles_nothing(api, make_agent, operator_token):
    """An agent with room looks at its pool's queue at every claim (and every look of a long-poll):
    the window read, with its requirement filter, is a statement built once (pools/dispatch.py), and
    it still hands out only what the agent can serve."""
    _, token = make_agent("w1", capabilities=["chrome"], task_capacity=3)

    def submit(task_id, capabilities):
        response = api.post("/api/tasks", {"task_id": task_id, "pool": "k8s-prod", "payload": {},
                                           "requirements": {"capabilities": capabilities}}, token=operator_token)
        assert response.status_code == 201, response.content[:300]

    def claim():  # one at a time: the same room, so the same window (one statement per window size)
        response = api.post("/api/agents/w1/tasks/claim", {"max": 1}, token=token)
        assert response.status_code == 200, response.content[:300]
        return [t["task_id"] for t in response.json()["tasks"]]

    submit("gpu-1", ["gpu"])
    submit("chrome-1", ["chrome"])
    assert claim() == ["chrome-1"]  # whatever is compiled once, compiled now
    submit("chrome-2", ["chrome"])
    submit("gpu-2", ["gpu"])
    with orm_compiles() as compiled:
        claimed = claim()
    # Reads only: inside the test's transaction the event rows are the ORM's (in production, COMMIT's
    # trigger numbers them and the insert is built once), and outside one a submit's after-commit
    # dispatch would place the tasks before any claim reads the queue.
    assert [c for c in compiled if isinstance(c, tuple) and c[0].lstrip().upper().startswith("SELECT")] == []
    assert claimed == ["chrome-1"]  # the first it holds; chrome-2 placed on it too, the gpu tasks not
    statuses = dict(Task.objects.values_list("task_id", "status"))
    assert statuses == {"chrome-1": "assigned", "chrome-2": "assigned", "gpu-1": "queued", "gpu-2": "queued"}


@pytest.mark.postgres
def test_an_agent_s_submit_of_one_task_compiles_nothing_of_its_own(api, make_agent):
    """A submit's reads (the pool by name, "is this agent in the pool?", "is the task id taken?")
    and its INSERT are statements built once (pools/queue.py). Its event row is left out: inside the
    test's transaction it is the ORM's (in production, COMMIT's trigger numbers it and its insert is
    built once). A taken id is still refused, and nothing more is written."""
    _, token = make_agent("w1")

    def submit(task_id):
        return api.post("/api/tasks", {"task_id": task_id, "pool": "k8s-prod", "payload": {"n": 1}}, token=token)

    assert submit("t-0").status_code == 201  # whatever is compiled once, compiled now
    with orm_compiles() as compiled:
        response = submit("t-1")
    assert response.status_code == 201, response.content[:300]
    assert [c for c in compiled if "assignments_event" not in str(c)] == []
    assert Task.objects.get(task_id="t-1").payload == {"n": 1}
    assert submit("t-1").status_code == 409 and Task.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_dispatch_after_a_submit_reads_pools_agents_and_held_counts_without_compiling(api, make_agent,
                                                                                         operator_token):
    """After a submit commits, the dispatcher places the pool's queued tasks: the pool by name, its
    placeable agents (locked, skipping those locked elsewhere) and their held counts are statements
    built once (pools/dispatch.py). Its queue read — the agents' requirement filters OR-ed, a shape
    that varies with the agents — is still the ORM's. The task is placed, as before."""
    make_agent("w1", task_capacity=2)

    def submit(task_id):
        response = api.post("/api/tasks", {"task_id": task_id, "pool": "k8s-prod", "payload": {}},
                            token=operator_token)
        assert response.status_code == 201, response.content[:300]

    submit("t-0")  # whatever is compiled once, compiled now
    with orm_compiles() as compiled:
        submit("t-1")
    sql = [str(c) for c in compiled]
    assert not [s for s in sql if "agents_agent" in s or "pools_agentpool" in s or "COUNT(" in s.upper()], sql
    assert dict(Task.objects.values_list("task_id", "status")) == {"t-0": "assigned", "t-1": "assigned"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_first_registration_is_one_insert_without_a_savepoint(api, pool, enrollment_token):
    """A new agent is not looked for first (once in the view for its pool, once locked in the
    service) nor its duplicate caught in a savepoint: its INSERT does nothing where the agent_id is
    taken, and only then is the agent read, locked, to be registered again (register −31% CPU in
    process, 11 → 7 statements, issue 15). Every statement, after-commit work included."""

    def register(agent_id) -> list[str]:
        return _registration_statements(api, pool, enrollment_token, agent_id)

    register("warm")
    first = register("first")
    # the pool by name; BEGIN, the INSERT, the pool's move lock (shared: a join moves nothing), the
    # event's INSERT, COMMIT; after it: the event's number, "queued tasks in the pool?" (dispatch),
    # "anything to rebalance?" (one each).
    assert len(first) == 9, "\n".join(s[:150] for s in first)
    assert "ON CONFLICT (agent_id) DO NOTHING" in first[2] and "pg_advisory_xact_lock_shared" in first[3]
    assert not any("SAVEPOINT" in sql or sql.startswith("SELECT t.id, t.agent_id") for sql in first)
    again = register("first")  # the INSERT does nothing; the move lock (exclusive), the agent locked
    assert "ON CONFLICT (agent_id) DO NOTHING" in again[2], "\n".join(s[:150] for s in again)
    assert again[3].startswith("SELECT pg_advisory_xact_lock(") and "FOR UPDATE" in again[4]
