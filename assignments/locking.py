"""Row locks that return their related rows too, safely.

`select_for_update(of=("self",))` with `select_related` locks only the row itself in one query —
but under READ COMMITTED, when the query had to wait for the lock and the other transaction changed
a foreign key meanwhile, PostgreSQL re-checks the locked row's new version against the *old* joined
rows: a nullable join comes back NULL (an assignment placed on an agent reads as agent None) and an
inner join drops the row altogether (a profile whose pool changed reads as missing). Once the lock is
held, a plain read sees the committed row; so when the joined rows do not match the locked row's
foreign keys, or the row seems gone, it is read again — a second query only in that rare case.
"""


def _mismatched(obj, related) -> bool:
    for name in related:
        field = obj._meta.get_field(name)
        fk_value = getattr(obj, field.attname)
        loaded = obj._state.fields_cache.get(name)
        if (fk_value is None) != (loaded is None) or (loaded is not None and loaded.pk != fk_value):
            return True
    return False


def lock_one(model, *, related: tuple[str, ...] = (), **lookup):
    """Lock the one row matching `lookup` until commit and return it with `related` loaded
    (direct foreign keys only). Raises `model.DoesNotExist` when there is no such row."""
    locking = model.objects.select_for_update(of=("self",))
    try:
        obj = locking.select_related(*related).get(**lookup)
    except model.DoesNotExist:
        if not related:
            raise
        # Gone, or dropped by the join re-check: lock the row alone to tell which.
        pk = locking.filter(**lookup).values_list("pk", flat=True).first()
        if pk is None:
            raise
        return model.objects.select_related(*related).get(pk=pk)
    if related and _mismatched(obj, related):
        return model.objects.select_related(*related).get(pk=obj.pk)
    return obj
