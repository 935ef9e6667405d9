"""Scene-setting through the services, so every object a test starts from has its events."""

from contextlib import contextmanager

from agents.services import agent_register
from assignments.services import profile_create
from config.actors import Actor
from pools.services import pool_create

OPERATOR = Actor.system("test-operator")


def make_pool(name="pool-a", **fields):
    pool, _token = pool_create(name=name, actor=OPERATOR, **fields)
    return pool


def make_agent(pool, agent_id, **fields):
    agent, _token = agent_register(pool=pool, agent_id=agent_id, actor=OPERATOR, **fields)
    return agent


def make_profile(profile_id, **fields):
    return profile_create(profile_id=profile_id, actor=OPERATOR, **fields)


def as_agent(agent_id: str) -> Actor:
    return Actor.for_agent(agent_id)



@contextmanager
def orm_compiles():
    """The queries the ORM compiles inside the block — SELECT, INSERT, UPDATE, DELETE: each its
    (sql, params), or for an INSERT a list of them. The hot paths keep their statements built once
    (config/sql.py); what shows up here was compiled anew."""
    from django.db.models.sql.compiler import SQLCompiler

    compiled = []
    originals = {c: c.__dict__["as_sql"] for c in (SQLCompiler, *SQLCompiler.__subclasses__()) if "as_sql" in c.__dict__}

    def counting(as_sql):
        def compile_counted(self, *args, **kwargs):
            sql_and_params = as_sql(self, *args, **kwargs)
            compiled.append(sql_and_params)
            return sql_and_params
        return compile_counted

    for compiler, as_sql in originals.items():
        compiler.as_sql = counting(as_sql)
    try:
        yield compiled
    finally:
        for compiler, as_sql in originals.items():
            compiler.as_sql = as_sql
