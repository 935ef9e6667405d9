"""config/sql.py: ORM queries compiled once and run with new values."""

import pytest

from assignments.models import Assignment, Profile
from config.sql import EXISTS, CompiledQuery, sql_insert, sql_update
from assignments.services import assignment_create
from tests.helpers import OPERATOR, make_agent, make_pool, make_profile

pytestmark = pytest.mark.django_db


def test_a_compiled_query_answers_as_the_orm_does_for_every_value():
    pool = make_pool("sql")
    make_agent(pool, "sql-a")
    held, free = make_profile("sql-p1", pool="sql"), make_profile("sql-p2", pool="sql")
    assignment_create(profile_id="sql-p1", agent_id="sql-a", actor=OPERATOR)
    holding = CompiledQuery(lambda pk: Assignment.objects.holding().filter(profile_id=pk), sentinels=(-7_000_000_001,),
                            kind=EXISTS)
    names = CompiledQuery(lambda pool_id: Profile.objects.filter(pool_id=pool_id).order_by("profile_id")
                          .values_list("profile_id"), sentinels=(-7_000_000_002,))
    for profile in (held, free, held):  # compiled on the first call only, right for each value
        assert holding.exists(profile.pk) == Assignment.objects.holding().filter(profile=profile).exists()
    assert holding.exists(free.pk) is False
    assert names.rows(pool.pk) == [("sql-p1",), ("sql-p2",)]
    assert names.rows(-1) == []


def test_a_slot_that_does_not_compile_to_one_parameter_is_refused():
    grows = CompiledQuery(lambda ids: Profile.objects.filter(pk__in=ids), sentinels=([-7_000_000_003, -7_000_000_004],))
    with pytest.raises(ValueError, match="compiled to 0 parameters"):
        grows.rows([1, 2])


def test_sql_insert_and_update_write_what_save_would():
    from django.utils import timezone

    from agents.models import Agent
    from pools.models import AgentPool

    pool = make_pool("sqlw")
    make_agent(pool, "sqlw-a")
    profile = make_profile("sqlw-p", pool="sqlw")
    now = timezone.now()
    assignment = Assignment(profile=profile, pool=AgentPool.objects.get(name="sqlw"), agent=Agent.objects.get(agent_id="sqlw-a"),
                            status="active", assigned_at=now, last_activity=now, fencing_token=7,
                            metadata={"nested": {"a": [1, "two"]}, "unicode": "żółw"})
    sql_insert(assignment)
    assert assignment.pk is not None and not assignment._state.adding
    stored = Assignment.objects.get(pk=assignment.pk)
    assert stored.assignment_id == assignment.assignment_id  # the default made in Python is what was stored
    assert stored.metadata == {"nested": {"a": [1, "two"]}, "unicode": "żółw"} and stored.fencing_token == 7

    assignment.status, assignment.release_reason, assignment.released_at = "released", "released", now
    assignment.workflow_id = "not written"
    sql_update(assignment, ["status", "release_reason", "released_at"])
    stored = Assignment.objects.get(pk=assignment.pk)
    assert (stored.status, stored.release_reason, stored.released_at) == ("released", "released", now)
    assert stored.workflow_id == ""


def test_sql_update_rows_writes_what_update_would_to_those_rows_only():
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import Agent
    from config.sql import sql_update_rows

    pool = make_pool("rows")
    for i in range(4):
        make_agent(pool, f"rows-{i}")
    pks = list(Agent.objects.filter(agent_id__startswith="rows-").order_by("agent_id").values_list("pk", flat=True))
    when = timezone.now() - timedelta(minutes=3)
    sql_update_rows(Agent, pks[1:3], last_assigned_at=when, priority=5)
    stored = dict(Agent.objects.filter(pk__in=pks).values_list("pk", "last_assigned_at"))
    assert [stored[pk] for pk in pks] == [None, when, when, None]
    assert list(Agent.objects.filter(pk__in=pks).order_by("agent_id").values_list("priority", flat=True)) == [0, 5, 5, 0]
    other = make_pool("rows-other")
    sql_update_rows(Agent, [pks[0]], pool=other.pk)  # a foreign key by its id, as update() takes it
    assert Agent.objects.get(pk=pks[0]).pool_id == other.pk
    sql_update_rows(Agent, [], priority=9)  # no rows: nothing
    assert not Agent.objects.filter(priority=9).exists()


def test_discover_reuses_one_statement_per_shape_with_each_call_s_values():
    from agents.selectors import agent_discover, agent_get

    pool = make_pool("sqld")
    make_agent(pool, "sqld-chrome", capabilities=["chrome", "pdf"], region="eu")
    make_agent(pool, "sqld-firefox", capabilities=["firefox"], region="us")
    for _ in range(2):  # the second round runs the statements compiled in the first
        assert [a.agent_id for a in agent_discover(pool="sqld", capabilities=["chrome"])] == ["sqld-chrome"]
        assert [a.agent_id for a in agent_discover(pool="sqld", capabilities=["firefox"])] == ["sqld-firefox"]
        assert [a.agent_id for a in agent_discover(pool="sqld", capabilities=["chrome", "firefox"])] == []
        assert [a.agent_id for a in agent_discover(pool="sqld", region="us")] == ["sqld-firefox"]
        assert agent_discover(pool="nope", capabilities=["chrome"]) == []
    agent = agent_get("sqld-chrome")
    assert (agent.pool.name, agent.capabilities, agent.region) == ("sqld", ["chrome", "pdf"], "eu")
    assert agent_get("sqld-none") is None


def test_lock_one_named_reads_what_lock_one_reads():
    from django.db import transaction

    from agents.models import Agent
    from config.locks import lock_one, lock_one_named

    pool = make_pool("sqll", profile_cooldown_seconds=30)
    make_agent(pool, "sqll-a", capacity=3, capabilities=["chrome"])
    make_profile("sqll-pooled", pool="sqll")
    make_profile("sqll-loose")
    only = ("agent_id", "status", "capacity", "capabilities", "pool__name", "pool__profile_cooldown_seconds")
    with transaction.atomic():
        named = lock_one_named(Agent, related="pool", only=only, agent_id="sqll-a")
        orm = lock_one(Agent, related=("pool",), only=only, agent_id="sqll-a")
        for name in ("pk", "agent_id", "status", "capacity", "capabilities", "pool_id"):
            assert getattr(named, name) == getattr(orm, name), name
        assert (named.pool.name, named.pool.profile_cooldown_seconds) == ("sqll", 30)
        loose = lock_one_named(Profile, related="pool", only=("profile_id", "pool__name"), profile_id="sqll-loose")
        assert loose.pool_id is None and loose.pool is None
        pooled = lock_one_named(Profile, related="pool", only=("profile_id", "pool__name"), profile_id="sqll-pooled")
        assert pooled.pool.name == "sqll"
        with pytest.raises(Agent.DoesNotExist):
            lock_one_named(Agent, related="pool", only=only, agent_id="sqll-none")


def test_where_the_statement_is_not_compiled_the_orm_answers_with_converted_values(monkeypatch):
    """Embedded mode (SQLite) runs the ORM's queryset: its datetimes and JSON come converted, and
    must not be converted twice (a heartbeat of `make run`'s fleet failed on a naive datetime)."""
    from django.utils import timezone

    from config import sql

    pool = make_pool("sqls")
    make_agent(pool, "sqls-a", capabilities=["chrome"])
    monkeypatch.setattr(sql.CompiledQuery, "_compiled_here", lambda self: False)
    from agents.models import Agent

    fields = ("id", "agent_id", "capabilities", "registered_at")
    query = CompiledQuery(lambda agent_id: Agent.objects.filter(agent_id=agent_id).values_list(*fields),
                          sentinels=("\x00slot",))
    [agent] = query.objects(Agent, fields, "sqls-a")
    assert agent.capabilities == ["chrome"] and timezone.is_aware(agent.registered_at)
    assert query.exists("sqls-a") and not query.exists("sqls-none")


def test_a_datetime_slot_takes_each_call_s_time_on_every_backend():
    """A slot may be a moment (a queue's "deadline still ahead"): PostgreSQL binds the sentinel as
    it is, SQLite as text; either way it is found, and each call's value is the one used."""
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    pool = make_pool("sqlt")
    make_agent(pool, "sqlt-a")
    make_profile("sqlt-p", pool="sqlt")
    taken = assignment_create(profile_id="sqlt-p", agent_id="sqlt-a", actor=OPERATOR)
    before = CompiledQuery(lambda pk, moment: Assignment.objects.filter(profile_id=pk, assigned_at__lt=moment)
                           .values_list("assignment_id"), sentinels=(-7_000_000_001, datetime(1901, 2, 3, 4, 5, 6, 789, tzinfo=UTC)))
    now = timezone.now()
    assert before.rows(taken.profile_id, now + timedelta(seconds=1)) == [(taken.assignment_id,)]
    assert before.rows(taken.profile_id, taken.assigned_at - timedelta(seconds=1)) == []
    assert before.rows(taken.profile_id, now + timedelta(seconds=1)) == [(taken.assignment_id,)]


def test_lock_one_named_without_only_reads_every_column_as_lock_one_does():
    from django.db import transaction

    from agents.models import Agent
    from config.locks import lock_one, lock_one_named

    pool = make_pool("sqla", profile_cooldown_seconds=30, profile_daily_quota=5)
    make_agent(pool, "sqla-a", capacity=3, capabilities=["chrome"], region="eu")
    with transaction.atomic():
        named = lock_one_named(Agent, related="pool", only=None, agent_id="sqla-a")
        orm = lock_one(Agent, related=("pool",), agent_id="sqla-a")
        assert not named.get_deferred_fields() and not named.pool.get_deferred_fields()
        for field in Agent._meta.concrete_fields:
            assert getattr(named, field.attname) == getattr(orm, field.attname), field.name
        for field in pool._meta.concrete_fields:
            assert getattr(named.pool, field.attname) == getattr(orm.pool, field.attname), field.name


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("named", [True, False])
def test_a_no_key_lock_lets_rows_that_reference_it_be_written_and_a_plain_one_does_not(named):
    """`no_key=True` (a task claim's lock of its agent) is FOR NO KEY UPDATE: another transaction's
    KEY SHARE lock on the row — what inserting a row that references it takes — is not kept waiting.
    The plain lock does keep it waiting. Both for the named statement and for lock_one."""
    import psycopg
    from django.db import connection, transaction

    from agents.models import Agent
    from config.locks import lock_one, lock_one_named

    pool = make_pool("nokey")
    make_agent(pool, "nokey-a")
    pk = Agent.objects.get(agent_id="nokey-a").pk
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)

    def key_share_waits() -> bool:
        with psycopg.connect(**params, autocommit=True) as other:
            other.execute("SET lock_timeout = '300ms'")
            try:
                with other.transaction():
                    other.execute("SELECT 1 FROM agents_agent WHERE id = %s FOR KEY SHARE", [pk])
            except psycopg.errors.LockNotAvailable:
                return True
        return False

    for no_key, waits in ((True, False), (False, True)):
        with transaction.atomic():
            if named:
                agent = lock_one_named(Agent, related="pool", only=None, no_key=no_key, agent_id="nokey-a")
            else:
                agent = lock_one(Agent, related=("pool",), no_key=no_key, agent_id="nokey-a")
            assert agent.pk == pk and agent.pool.name == "nokey"
            assert key_share_waits() is waits, no_key
