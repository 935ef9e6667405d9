"""ORM queries compiled once and run as SQL on the hot paths (issue 15).

Compiling a queryset costs more CPU than running it: about 0.5–1 ms a query on the 2-CPU bench
machine, against ~0.1–0.3 ms for the round trip. A `CompiledQuery` keeps the ORM as the one
definition of what a query means (`Assignment.objects.queued()`, `waiting_q`…) and compiles it on
first use with a sentinel in each slot; later calls put their values where the sentinels were and
run the same SQL text. Only for queries whose shape does not depend on the values (no `__in` lists,
whose placeholders grow with the list): a slot must come out as exactly one parameter, which is
checked when the query is compiled. A sentinel is a value no real call passes (an impossible primary
key, a datetime of 1901).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, connections, transaction
from django.db.models import QuerySet

EXISTS = "exists"
ROWS = "rows"


def _unwrapped(value):
    return getattr(value, "obj", value)


def _is_slot(value, sentinel, connection) -> bool:
    """Whether a compiled parameter is this sentinel: as given, or as the backend adapted it (SQLite
    binds datetimes as text; PostgreSQL binds them as they are)."""
    value = _unwrapped(value)
    if value == sentinel:
        return True
    return isinstance(sentinel, datetime) and value == connection.ops.adapt_datetimefield_value(sentinel)


def _converter(fields: list, using: str) -> Callable[[list], list]:
    """A function converting a raw row of these fields' columns as the ORM does (`from_db_value`:
    jsonb comes back as text). Which fields convert, and the connection, are looked up once, not per
    value: per value, discover's 100 agents cost ~2,500 connection lookups (context-local reads) a
    request."""
    connection = connections[using]
    converting = [(i, f.from_db_value) for i, f in enumerate(fields) if hasattr(f, "from_db_value")]

    def convert(values: list) -> list:
        for i, from_db_value in converting:
            if values[i] is not None:
                values[i] = from_db_value(values[i], None, connection)
        return values

    return convert


def from_row(model, fields: list, values, *, using: str = "default", convert: bool = True):
    """`model` built from a raw row of these fields' columns (others deferred), each value converted
    as the ORM converts it unless `convert` is False (values the ORM has converted already). The one
    way the named statements make model objects."""
    values = list(values)
    if convert:
        values = _converter(fields, using)(values)
    return model.from_db(using, [f.attname for f in fields], values)


def value_and_rows(value_sql: str, rows_sql: str) -> str:
    """One statement answering a single value and the rows of `rows_sql` (whose first column is never
    NULL, e.g. a primary key): rows of (value, *row), or one row (value, NULL, …) when it has none.
    `split_value_and_rows` takes the answer apart."""
    return f"SELECT {value_sql}, r.* FROM (SELECT 1) AS one LEFT JOIN LATERAL ({rows_sql}) AS r ON true"


def split_value_and_rows(rows: list[tuple]) -> tuple[object, list[tuple]]:
    return rows[0][0], [row[1:] for row in rows if row[1] is not None]


class CompiledQuery:
    """`CompiledQuery(lambda pk: Model.objects.filter(fk=pk), sentinels=(-7_000_000_001,))`, then
    `.exists(pk)` or `.rows(pk)` (tuples, as `values_list` gives them)."""

    def __init__(self, build: Callable[..., QuerySet], *, sentinels: tuple, kind: str = ROWS, using: str = "default"):
        self.build, self.sentinels, self.kind, self.using = build, sentinels, kind, using
        self._compiled: tuple[str, list, list[int]] | None = None
        self._lock = threading.Lock()

    def _compile(self) -> tuple[str, list, list[int]]:
        with self._lock:
            if self._compiled is None:
                queryset = self.build(*self.sentinels)
                query = queryset.query.exists(limit=True) if self.kind == EXISTS else queryset.query
                sql, params = query.get_compiler(using=self.using).as_sql()
                params = list(params)
                slots = []
                for sentinel in self.sentinels:
                    where = [i for i, value in enumerate(params) if _is_slot(value, sentinel, connections[self.using])]
                    if len(where) != 1:
                        raise ValueError(f"slot {sentinel!r} compiled to {len(where)} parameters, not 1: {sql}")
                    slots.append(where[0])
                self._compiled = (sql, params, slots)
            return self._compiled

    def sql(self, *values) -> tuple[str, list]:
        sql, params, slots = self._compile()
        params = list(params)
        for slot, value in zip(slots, values, strict=True):
            template = params[slot]
            if hasattr(template, "obj"):  # an adapter the field wrapped its value in (psycopg's Jsonb)
                wrapped = copy.copy(template)
                wrapped.obj = value
                value = wrapped
            params[slot] = value
        return sql, params

    def _compiled_here(self) -> bool:
        """PostgreSQL runs the compiled text; SQLite (embedded mode, never the hot path of a fleet)
        runs the ORM's queryset, whose values its converters turn into Python (datetimes, JSON)."""
        return connections[self.using].vendor == "postgresql"

    def rows(self, *values) -> list[tuple]:
        if not self._compiled_here():
            self._compile()  # a slot that is not one parameter is refused here too
            return [tuple(row) for row in self.build(*values)]
        sql, params = self.sql(*values)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def exists(self, *values) -> bool:
        if not self._compiled_here():
            self._compile()
            return self.build(*values).exists()
        return bool(self.rows(*values))

    def objects(self, model, fields: tuple[str, ...], *values, rows: list | None = None) -> list:
        """The rows as `model` instances, for a query built as `.values_list(*fields, …)`: the
        first len(fields) columns are those fields (in the model's field order; the rest deferred),
        converted as the ORM converts them; any further columns are left on `obj._extra`. `rows`:
        this query's rows read by the caller already (inside a statement of its own: `.sql()`)."""
        meta_fields = [model._meta.get_field(name) for name in fields]
        attnames = [f.attname for f in meta_fields]
        # Raw rows need the fields' own conversions; the ORM's (SQLite) are done.
        convert = _converter(meta_fields, self.using) if self._compiled_here() else list
        width = len(fields)
        built = []
        for row in self.rows(*values) if rows is None else rows:
            obj = model.from_db(self.using, attnames, convert(list(row[:width])))
            obj._extra = row[width:]
            built.append(obj)
        return built


# --- Model writes as named statements ------------------------------------------------------------
# `Model.save()` compiles its INSERT or UPDATE on every call; the hot paths write the same columns
# every time, so the statement text is built once per (model, columns) from the model's fields and
# the values are prepared exactly as `save()` prepares them (`pre_save`, `get_db_prep_save`). No
# model here has signal receivers; these skip `pre_save`/`post_save` signals, so a model that grows
# one must not be written through them.

_statements: dict[tuple, tuple[str, list]] = {}


def _statement(kind: str, model, names: tuple[str, ...] = ()) -> tuple[str, list]:
    """(SQL text, its fields) of an INSERT of every concrete field but the primary key (that does
    nothing on a conflict of the unique field `names[0]`, "insert_if_absent"), or an UPDATE of
    `names` by primary key; built on first use."""
    key = (kind, model, names)
    built = _statements.get(key)
    if built is None:
        table, pk = model._meta.db_table, model._meta.pk
        if kind in ("insert", "insert_if_absent"):
            fields = [f for f in model._meta.concrete_fields if not f.primary_key]
            conflict = f" ON CONFLICT ({model._meta.get_field(names[0]).column}) DO NOTHING" if names else ""
            sql = (f"INSERT INTO {table} ({', '.join(f.column for f in fields)}) "
                   f"VALUES ({', '.join(['%s'] * len(fields))}){conflict} RETURNING {pk.column}")
        else:
            fields = [model._meta.get_field(name) for name in names]
            sql = f"UPDATE {table} SET {', '.join(f'{f.column} = %s' for f in fields)} WHERE {pk.column} = %s"
        built = _statements[key] = (sql, fields)
    return built


def sql_insert(obj, *, using: str = "default") -> None:
    """INSERT `obj` (every concrete field but its auto primary key) and set its primary key."""
    model = type(obj)
    pk = model._meta.pk
    connection = connections[using]
    if connection.vendor != "postgresql" or not pk.auto_created:
        obj.save(force_insert=True, using=using)
        return
    sql, fields = _statement("insert", model)
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        setattr(obj, pk.attname, cursor.fetchone()[0])
    obj._state.adding, obj._state.db = False, using


def sql_insert_if_absent(obj, unique: str, *, using: str = "default") -> bool:
    """INSERT `obj` (as `sql_insert`) unless a row with its value of the unique field `unique`
    exists, in one statement (`ON CONFLICT DO NOTHING`: no savepoint to catch the duplicate, and a
    concurrent insert of the same value is waited for); True when inserted. Other integrity errors
    raise as ever (on SQLite, which runs the ORM's insert in a savepoint, any integrity error is
    taken for the duplicate: callers clean their values first)."""
    model = type(obj)
    connection = connections[using]
    if connection.vendor != "postgresql" or not model._meta.pk.auto_created:
        try:
            with transaction.atomic(using=using):
                obj.save(force_insert=True, using=using)
        except IntegrityError:
            return False
        return True
    sql, fields = _statement("insert_if_absent", model, (unique,))
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    setattr(obj, model._meta.pk.attname, row[0])
    obj._state.adding, obj._state.db = False, using
    return True


def sql_update_statement(obj, fields: list[str] | tuple[str, ...], *, using: str = "default") -> tuple[str, list]:
    """(SQL, params) of the UPDATE `sql_update` runs, for a caller that sends it with another
    statement (PostgreSQL only)."""
    connection = connections[using]
    sql, columns = _statement("update", type(obj), tuple(fields))
    params = [f.get_db_prep_save(f.pre_save(obj, add=False), connection) for f in columns]
    return sql, [*params, obj.pk]


def sql_update(obj, fields: list[str] | tuple[str, ...], *, using: str = "default") -> None:
    """UPDATE these fields of `obj`'s row (as `obj.save(update_fields=fields)`)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        obj.save(update_fields=tuple(fields), using=using)
        return
    sql, params = sql_update_statement(obj, fields, using=using)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def sql_update_rows(model, pks: list, *, using: str = "default", **values) -> None:
    """UPDATE these columns of the rows with these primary keys to the same values (as
    `model.objects.filter(pk__in=pks).update(**values)`): one statement whatever the number of rows
    (`= ANY(%s)`, one array parameter), built once per (model, columns)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        model.objects.using(using).filter(pk__in=pks).update(**values)
        return
    names = tuple(values)
    sql, fields = _statement("update", model, names)
    sql = sql.replace(f"WHERE {model._meta.pk.column} = %s", f"WHERE {model._meta.pk.column} = ANY(%s)")
    params = [f.get_db_prep_save(values[name], connection) for f, name in zip(fields, names, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, list(pks)])
