"""config/sql.py: ORM queries compiled once and run with new values."""

import pytest

from assignments.models import Assignment, Profile
from config.sql import EXISTS, CompiledQuery
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
