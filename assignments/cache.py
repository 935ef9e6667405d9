"""The cache of live assignments (django-redis in production, in-process in embedded mode).

The database is the truth; this is a copy for hot reads (`GET /api/profiles/{id}/assignment`
through `selectors.assignment_live_for_profile`). Keys, under the cache's KEY_PREFIX:
- `asg:profile:<profile_id>` → `{"a": <snapshot> | None}` — the profile's live assignment, or none;
- `asg:agent:<agent_id>` → `{"a": [<snapshot>, ...]}` — the agent's live assignments.

Written after commit: `recorded_transaction` hands every committed batch of events to
`cache_refresh_for_events`, which re-reads the rows those events name and stores them. Redis errors
are ignored by the cache itself (IGNORE_EXCEPTIONS in settings): while Redis is down reads fall back
to the database and writes are lost — the reconcile job (`assignments_reconcile_cache`) repairs that
drift once it is back, and counts it. A snapshot's `last_activity` may lag (heartbeats renew it
without an event); reconciliation compares only what says who holds what.
"""

import json
import logging
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Q

from agents.models import Agent
from assignments.models import Assignment, Profile, holding_q
from pools.models import AgentPool

log = logging.getLogger(__name__)

PROFILE_PREFIX = "asg:profile:"
AGENT_PREFIX = "asg:agent:"
# The fields that say who holds what; a difference in any of them is drift.
IDENTITY = ("assignment_id", "status", "agent_id", "fencing_token")


def profile_key(profile_id: str) -> str:
    return f"{PROFILE_PREFIX}{profile_id}"


def agent_key(agent_id: str) -> str:
    return f"{AGENT_PREFIX}{agent_id}"


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


def truth_for_agents(agent_ids) -> dict[str, dict]:
    """What the cache should hold for these agents, from the database (one query)."""
    entries = {agent_key(aid): {"a": []} for aid in agent_ids}
    for assignment in _live().filter(agent__agent_id__in=list(agent_ids)).order_by("pk"):
        entries[agent_key(assignment.agent.agent_id)]["a"].append(snapshot(assignment))
    return entries


# The after-commit refresh runs after every commit that touches an assignment, so it is on the
# API's hot path: on PostgreSQL it is this named statement, which reads exactly the columns of a
# snapshot (the ORM's version compiled a four-table query and built four model objects per row).
# It reads no lock: it runs after COMMIT, and re-reads the truth so that a late refresh can never
# store an older state over a newer one.
LIVE_SNAPSHOTS_SQL = """
SELECT a.id, a.assignment_id, a.profile_id, p.profile_id, a.pool_id, pl.name, a.agent_id, ag.agent_id,
       a.workflow_id, a.status, a.assigned_at, a.released_at, a.last_activity, a.fencing_token,
       a.platform_resource_id, a.release_reason, a.metadata
FROM assignments_assignment a
JOIN assignments_profile p ON p.id = a.profile_id
JOIN pools_agentpool pl ON pl.id = a.pool_id
LEFT JOIN agents_agent ag ON ag.id = a.agent_id
WHERE a.status IN ('pending', 'active', 'idle', 'releasing')
  AND (p.profile_id = ANY(%s) OR ag.agent_id = ANY(%s))
ORDER BY a.id
"""
_SNAPSHOT_COLUMNS = (
    "pk", "assignment_id", "profile_pk", "profile_id", "pool_pk", "pool", "agent_pk", "agent_id", "workflow_id",
    "status", "assigned_at", "released_at", "last_activity", "fencing_token", "platform_resource_id",
    "release_reason", "metadata",
)


def _live_snapshots(profile_ids: set, agent_ids: set) -> list[dict]:
    """Snapshots of the live assignments of these profiles or agents, in primary-key order."""
    if connection.vendor != "postgresql":
        return [snapshot(a) for a in _live().filter(
            Q(profile__profile_id__in=list(profile_ids)) | Q(agent__agent_id__in=list(agent_ids))
        ).order_by("pk")]
    with connection.cursor() as cursor:
        cursor.execute(LIVE_SNAPSHOTS_SQL, [sorted(profile_ids), sorted(agent_ids)])
        rows = cursor.fetchall()
    return [snapshot_from_row(row) for row in rows]


def snapshot_from_row(row) -> dict:
    """The same snapshot as `snapshot()`, from a LIVE_SNAPSHOTS_SQL row."""
    item = dict(zip(_SNAPSHOT_COLUMNS, row, strict=True))
    item["assignment_id"] = str(item["assignment_id"])
    for name in ("assigned_at", "released_at", "last_activity"):
        item[name] = _iso(item[name])
    if isinstance(item["metadata"], str):
        item["metadata"] = json.loads(item["metadata"])
    return item


def cache_refresh(*, profile_ids=(), agent_ids=()) -> None:
    """Store the database's current truth for these profiles and agents (one query for both: this
    runs after every commit that touches an assignment, so it is on the API's hot path)."""
    profile_ids, agent_ids = set(profile_ids), set(agent_ids)
    if not (profile_ids or agent_ids):
        return
    entries = {profile_key(pid): {"a": None} for pid in profile_ids}
    entries.update({agent_key(aid): {"a": []} for aid in agent_ids})
    for item in _live_snapshots(profile_ids, agent_ids):
        # The profile's holder only: requests queued for it (pending with an agent) are not.
        queued = item["status"] == Assignment.Status.PENDING and item["agent_pk"] is not None
        if item["profile_id"] in profile_ids and not queued:
            entries[profile_key(item["profile_id"])] = {"a": item}
        if item["agent_id"] in agent_ids:
            entries[agent_key(item["agent_id"])]["a"].append(item)
    cache_store(entries)


def cache_store(entries: dict) -> None:
    """Store these entries. One entry that cannot be stored (a value the cache cannot serialise)
    must not cost the others, nor leave its old value behind — an old "free" for a profile that is
    now held: such a key is deleted instead, so that readers fall back to the database."""
    try:
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


def cache_refresh_for_events(payloads: list[dict]) -> None:
    """After commit: refresh the entries of every profile and agent the committed events touched.
    Best-effort — a failure here is logged; reconciliation repairs what it missed."""
    profile_ids, agent_ids = set(), set()
    for event in payloads:
        if not event.get("assignment_id"):
            continue
        if event.get("profile_id"):
            profile_ids.add(event["profile_id"])
        data = event.get("data") or {}
        for agent_id in (event.get("agent_id"), data.get("from_agent_id"), data.get("to_agent_id")):
            if agent_id:
                agent_ids.add(agent_id)
    if not (profile_ids or agent_ids):
        return
    try:
        cache_refresh(profile_ids=profile_ids, agent_ids=agent_ids)
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


def cached_for_agent(agent_id: str) -> tuple[bool, list[dict]]:
    entry = cache.get(agent_key(agent_id))
    if not isinstance(entry, dict) or "a" not in entry:
        return False, []
    return True, entry["a"]


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
