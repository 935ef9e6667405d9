"""The cache of live assignments (django-redis in production, in-process in embedded mode).

The database is the truth; this is a copy for hot reads (`GET /api/profiles/{id}/assignment`
through `selectors.assignment_live_for_profile`). One key per profile, under the cache's KEY_PREFIX:
`asg:profile:<profile_id>` → `{"a": <snapshot> | None}` — the profile's holder, or none. (Per-agent
lists were kept too until issue 15's profile showed them written on every commit and read by
nothing; the agent API reads its assignments from the database.)

Written after commit: `recorded_transaction` reads the profiles' holders in the same statement that
reads the committed events' numbers (`numbers_and_holders`: one round trip for both) and stores them
here (`cache_refresh_for_events`); the read is after COMMIT, so it is the truth at that moment. Redis
errors are ignored by the cache itself (IGNORE_EXCEPTIONS in settings): while Redis is down reads fall
back to the database and writes are lost — the reconcile job (`assignments_reconcile_cache`) repairs
that drift once it is back, and counts it. A snapshot's `last_activity` may lag (heartbeats renew it
without an event); reconciliation compares only what says who holds what.
"""

import json
import logging
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db import connection

from agents.models import Agent
from assignments.models import Assignment, Profile, holding_q
from config.caching import cache
from config.sql import split_value_and_rows, value_and_rows
from pools.models import AgentPool

log = logging.getLogger(__name__)

PROFILE_PREFIX = "asg:profile:"
# The fields that say who holds what; a difference in any of them is drift.
IDENTITY = ("assignment_id", "status", "agent_id", "fencing_token")


def profile_key(profile_id: str) -> str:
    return f"{PROFILE_PREFIX}{profile_id}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def snapshot(assignment) -> dict:
    """Plain data for one assignment (with its profile, pool and agent loaded)."""
    return {
        "pk": assignment.pk,
        "assignment_id": str(assignment.assignment_id),
        "profile_pk": assignment.profile_id,
        "profile_id": assignment.profile.profile_id,
        "pool_pk": assignment.pool_id,
        "pool": assignment.pool.name,
        "agent_pk": assignment.agent_id,
        "agent_id": assignment.agent.agent_id if assignment.agent_id else None,
        "workflow_id": assignment.workflow_id,
        "status": assignment.status,
        "assigned_at": _iso(assignment.assigned_at),
        "released_at": _iso(assignment.released_at),
        "last_activity": _iso(assignment.last_activity),
        "fencing_token": assignment.fencing_token,
        "platform_resource_id": assignment.platform_resource_id,
        "release_reason": assignment.release_reason,
        "metadata": assignment.metadata,
    }


def from_snapshot(data: dict):
    """An (unsaved, read-only) Assignment with its profile, pool and agent, built from a snapshot."""
    agent = Agent(pk=data["agent_pk"], agent_id=data["agent_id"]) if data["agent_pk"] else None
    assignment = Assignment(
        pk=data["pk"],
        assignment_id=UUID(data["assignment_id"]),
        profile=Profile(pk=data["profile_pk"], profile_id=data["profile_id"]),
        pool=AgentPool(pk=data["pool_pk"], name=data["pool"]),
        agent=agent,
        workflow_id=data["workflow_id"],
        status=data["status"],
        assigned_at=datetime.fromisoformat(data["assigned_at"]),
        released_at=datetime.fromisoformat(data["released_at"]) if data["released_at"] else None,
        last_activity=datetime.fromisoformat(data["last_activity"]),
        fencing_token=data["fencing_token"],
        platform_resource_id=data["platform_resource_id"],
        release_reason=data["release_reason"],
        metadata=data["metadata"],
    )
    assignment._state.adding = False  # a copy of a saved row, never to be inserted
    return assignment


def _live():
    return Assignment.objects.filter(status__in=Assignment.LIVE_STATUSES).select_related("profile", "pool", "agent")


def truth_for_profiles(profile_ids) -> dict[str, dict]:
    """What the cache should hold for these profiles, from the database (one query)."""
    entries = {profile_key(pid): {"a": None} for pid in profile_ids}
    # The profile's holder only: requests queued for it (pending with an agent) are not.
    for assignment in _live().filter(holding_q(), profile__profile_id__in=list(profile_ids)):
        entries[profile_key(assignment.profile.profile_id)] = {"a": snapshot(assignment)}
    return entries


# The after-commit refresh runs after every commit that touches an assignment, so it is on the
# API's hot path: on PostgreSQL it is a named statement that reads exactly the columns of a snapshot
# (the ORM's version compiled a four-table query and built four model objects per row), joined to the
# read of the committed events' numbers (`numbers_and_holders`). It takes no lock: it runs after
# COMMIT and reads the truth of that moment. The holder is `holding_q`: held by an agent, or the
# pool's session waiting for one (no agent); requests queued behind the holder are not.
_HOLDERS_SQL = """
SELECT a.id, a.assignment_id, a.profile_id, p.profile_id, a.pool_id, pl.name, a.agent_id, ag.agent_id,
       a.workflow_id, a.status, a.assigned_at, a.released_at, a.last_activity, a.fencing_token,
       a.platform_resource_id, a.release_reason, a.metadata
FROM assignments_assignment a
JOIN assignments_profile p ON p.id = a.profile_id
JOIN pools_agentpool pl ON pl.id = a.pool_id
LEFT JOIN agents_agent ag ON ag.id = a.agent_id
WHERE p.profile_id = ANY(%s)
  AND (a.status IN ('active', 'idle', 'releasing') OR (a.status = 'pending' AND a.agent_id IS NULL))
"""
# The numbers the commit-time trigger drew for this session's last transaction (assignments/events.py)
# and the holders, in one round trip: one row per holder, or one row of NULL holder columns.
_NUMBERS_AND_HOLDERS_SQL = value_and_rows("currval('assignments_event_seq_committed')", _HOLDERS_SQL)
_SNAPSHOT_COLUMNS = (
    "pk", "assignment_id", "profile_pk", "profile_id", "pool_pk", "pool", "agent_pk", "agent_id", "workflow_id",
    "status", "assigned_at", "released_at", "last_activity", "fencing_token", "platform_resource_id",
    "release_reason", "metadata",
)


def snapshot_from_row(row) -> dict:
    """The same snapshot as `snapshot()`, from a _HOLDERS_SQL row."""
    item = dict(zip(_SNAPSHOT_COLUMNS, row, strict=True))
    item["assignment_id"] = str(item["assignment_id"])
    for name in ("assigned_at", "released_at", "last_activity"):
        item[name] = _iso(item[name])
    if isinstance(item["metadata"], str):
        item["metadata"] = json.loads(item["metadata"])
    return item


def profiles_touched(events) -> set[str]:
    """The profiles whose holder these events (payloads or Event rows) may have changed."""
    found = set()
    for event in events:
        get = event.get if isinstance(event, dict) else lambda name, event=event: getattr(event, name)
        if get("assignment_id") and get("profile_id"):
            found.add(get("profile_id"))
    return found


def numbers_and_holders(profile_ids: set[str]) -> tuple[int, dict[str, dict]]:
    """After a COMMIT on this connection (PostgreSQL): the last event number the commit-time trigger
    drew in it, and the cache entries of these profiles — one statement."""
    with connection.cursor() as cursor:
        cursor.execute(_NUMBERS_AND_HOLDERS_SQL, [sorted(profile_ids)])
        last, rows = split_value_and_rows(cursor.fetchall())
    return last, _entries(profile_ids, rows)


def _entries(profile_ids: set[str], rows) -> dict[str, dict]:
    """The cache entries of these profiles from their holders' _HOLDERS_SQL rows (none: free)."""
    entries = {profile_key(pid): {"a": None} for pid in profile_ids}
    for row in rows:
        item = snapshot_from_row(row)
        entries[profile_key(item["profile_id"])] = {"a": item}
    return entries


def _holders(profile_ids: set[str]) -> dict[str, dict]:
    if connection.vendor != "postgresql":
        return truth_for_profiles(profile_ids)
    with connection.cursor() as cursor:
        cursor.execute(_HOLDERS_SQL, [sorted(profile_ids)])
        return _entries(profile_ids, cursor.fetchall())


def cache_refresh(*, profile_ids=()) -> None:
    """Store the database's current truth for these profiles (one query)."""
    profile_ids = set(profile_ids)
    if profile_ids:
        cache_store(_holders(profile_ids))


def cache_store(entries: dict) -> None:
    """Store these entries. One entry that cannot be stored (a value the cache cannot serialise)
    must not cost the others, nor leave its old value behind — an old "free" for a profile that is
    now held: such a key is deleted instead, so that readers fall back to the database."""
    try:
        if len(entries) == 1:
            # A write touches one profile nearly always: one SET, where django-redis's set_many
            # wraps even one key in MULTI/EXEC (three commands for Redis to run and us to parse).
            [(key, value)] = entries.items()
            cache.set(key, value, timeout=settings.TETHER_ASSIGNMENT_CACHE_SECONDS)
        else:
            cache.set_many(entries, timeout=settings.TETHER_ASSIGNMENT_CACHE_SECONDS)
        return
    except Exception:  # noqa: BLE001 — find the bad entry below, one key at a time
        pass
    for key, value in entries.items():
        try:
            cache.set(key, value, timeout=settings.TETHER_ASSIGNMENT_CACHE_SECONDS)
        except Exception:  # noqa: BLE001
            log.warning("could not cache %s; dropping its entry", key, exc_info=True)
            cache.delete(key)


def cache_refresh_for_events(payloads: list[dict], entries: dict | None = None) -> None:
    """After commit: refresh the entries of every profile the committed events touched — `entries`
    when the caller read them already (`numbers_and_holders`), else read here. Best-effort: a
    failure is logged; reconciliation repairs what it missed."""
    try:
        if entries is None:
            cache_refresh(profile_ids=profiles_touched(payloads))
        elif entries:
            cache_store(entries)
    except Exception:  # noqa: BLE001 — the change has committed; the cache is only a copy
        log.warning("could not refresh the assignment cache", exc_info=True)


def cached_for_profile(profile_id: str) -> tuple[bool, dict | None]:
    """(hit, snapshot or None). A miss — absent, or Redis unreachable — is (False, None)."""
    entry = cache.get(profile_key(profile_id))
    if not isinstance(entry, dict) or "a" not in entry:
        return False, None
    return True, entry["a"]


def fill_profile(profile_id: str, assignment) -> None:
    """Store a value just read from the database, unless a fresher one got there first (`add`: a
    refresh after a concurrent commit wins over this read)."""
    value = {"a": snapshot(assignment) if assignment is not None else None}
    try:
        cache.add(profile_key(profile_id), value, timeout=settings.TETHER_ASSIGNMENT_CACHE_SECONDS)
    except Exception:  # noqa: BLE001 — the answer came from the database; only the copy is lost
        log.warning("could not cache %s", profile_key(profile_id), exc_info=True)


def cache_reachable() -> bool:
    """Whether the cache answers (django-redis swallows errors, so ask Redis directly)."""
    if not settings.REDIS_URL or "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        return True
    try:
        from django_redis import get_redis_connection

        return bool(get_redis_connection("default").ping())
    except Exception:  # noqa: BLE001
        return False


def cached_keys(prefix: str) -> list[str]:
    """Every cached key with this prefix (without the cache's own KEY_PREFIX), by SCAN on Redis;
    in-process caches cannot list their keys, so there it is empty (they never drift anyway:
    they are written in the same process that commits)."""
    iter_keys = getattr(cache, "iter_keys", None)
    if iter_keys is None:
        return []
    return list(iter_keys(f"{prefix}*"))


def same(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in IDENTITY)
