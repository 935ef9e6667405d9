"""Choosing a profile by requirements (DESIGN.md, "Choosing a profile and keeping it healthy").

`profile_select` picks and LOCKS a free profile that matches `{"tags": [...], "region", "pool"}`,
is enabled, not quarantined, healthy (`TETHER_PROFILE_MIN_HEALTH_SCORE`), not cooling down and under
its daily quota — the one released longest ago first (never released first). Atomic under any
concurrency: `FOR UPDATE SKIP LOCKED` lets concurrent selections pass over each other's candidate
instead of queueing behind it (and then all taking the next one), and the holder is checked again
under the lock, so no two requests ever get one profile; the partial unique index of invariant 1
stays the last word.
"""

from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q

from agents.models import Agent
from assignments.guardrails import utc_day
from assignments.models import Assignment, Profile, holding_q
from assignments.selectors import PROFILE_HELD
from config.errors import ValidationFailed
from config.sql import CompiledQuery
from config.validation import clean_string_list, clean_text

REQUIREMENT_KEYS = ("tags", "region", "pool")
# Attempts before a selection gives up. Each attempt skips what concurrent selections hold locked;
# one fails only when a take committed between its statement's snapshot and its lock (the profile
# looked free and was not), and the next attempt's fresh statement sees that take. So a failed
# attempt means another request got a profile first: with 64 selections at once, 5 attempts ran out
# while 200 profiles were free (make bench, 4-7 of 320 answered no_profile_available). The cap only
# bounds the pathological case; with no candidate left the loop ends at once.
_ATTEMPTS = 64


def clean_requirements(value) -> dict:
    """`{"tags": [...], "region": "...", "pool": "..."}`: at least one, nothing else."""
    if not isinstance(value, dict):
        raise ValidationFailed("profile_requirements must be a JSON object",
                               details={"profile_requirements": ["not an object"]})
    unknown = sorted(set(value) - set(REQUIREMENT_KEYS))
    if unknown:
        raise ValidationFailed(
            f"unknown profile_requirements fields: {', '.join(unknown)} (use {', '.join(REQUIREMENT_KEYS)})",
            details={"profile_requirements": {k: ["unknown field"] for k in unknown}},
        )
    cleaned = {}
    if value.get("tags"):
        cleaned["tags"] = sorted(set(clean_string_list("profile_requirements.tags", value["tags"])))
    if value.get("region"):
        cleaned["region"] = clean_text("profile_requirements.region", value["region"], max_length=64)
    if value.get("pool"):
        cleaned["pool"] = clean_text("profile_requirements.pool", value["pool"], max_length=64)
    if not cleaned:
        raise ValidationFailed(
            "profile_requirements must name at least one of tags, region, pool",
            details={"profile_requirements": ["empty: it would match any profile; name tags, region or pool"]},
        )
    return cleaned


def matching_profiles(requirements: dict, agent: Agent):
    """Profiles that match `requirements` and that `agent` may take at all (its pool or none;
    enabled, not quarantined, healthy) — free or not. Tags are all-of. On SQLite (embedded mode) the
    tags are matched in Python by `tags_match`: it cannot query inside JSON lists."""
    return _matching(requirements, pool_id=agent.pool_id, min_health=settings.TETHER_PROFILE_MIN_HEALTH_SCORE,
                     tags_in_sql=connection.vendor == "postgresql")


def _matching(requirements: dict, *, pool_id, min_health, tags_in_sql: bool):
    qs = Profile.objects.filter(enabled=True, quarantined=False, health_score__gte=min_health)
    qs = qs.filter(Q(pool__isnull=True) | Q(pool_id=pool_id))
    if "pool" in requirements:
        qs = qs.filter(pool__name=requirements["pool"])
    if "region" in requirements:
        qs = qs.filter(region=requirements["region"])
    if requirements.get("tags") and tags_in_sql:
        qs = qs.filter(tags__contains=requirements["tags"])
    return qs


def tags_match(profile: Profile, requirements: dict) -> bool:
    return set(requirements.get("tags", ())) <= set(profile.tags or ())


def _guardrails(pool, now) -> dict:
    """What a pool's guardrails ask of a free profile now: released before a moment (its cooldown),
    and under a daily quota today."""
    limits = {}
    if pool.profile_cooldown_seconds:
        limits["released_before"] = now - timedelta(seconds=pool.profile_cooldown_seconds)
    if pool.profile_daily_quota:
        limits.update(today=utc_day(now), quota=pool.profile_daily_quota)
    return limits


def _takeable(qs, limits: dict):
    """Free (no holder), not cooling down, under the daily quota (`_guardrails`)."""
    qs = qs.filter(~Exists(Assignment.objects.filter(holding_q(), profile=OuterRef("pk"))))
    if "released_before" in limits:
        qs = qs.filter(Q(last_released_at__isnull=True) | Q(last_released_at__lte=limits["released_before"]))
    return _under_quota(qs, limits)


def _under_quota(qs, limits: dict):
    if "quota" in limits:
        qs = qs.filter(Q(quota_day__isnull=True) | ~Q(quota_day=limits["today"]) | Q(quota_takes__lt=limits["quota"]))
    return qs


def _selection_order(qs):
    return qs.order_by(F("last_released_at").asc(nulls_first=True), "pk")


# The selection's statement on PostgreSQL, one per shape (which requirements and guardrails apply),
# compiled once from the definitions above: under 64 concurrent selections, compiling it again on
# every attempt cost more than running it (issue 15). Each slot's sentinel, by name:
_SLOTS = {
    "pool_id": -7_000_000_101,
    "min_health": -7_000_000_102.5,
    "pool": "\x00slot:pool",
    "region": "\x00slot:region",
    "tags": ["\x00slot:tag"],
    "released_before": datetime(1901, 2, 3, 4, 5, 6, 789, tzinfo=UTC),
    "today": date(1901, 2, 3),
    "quota": 2_000_000_103,  # in the column's range: the ORM drops a comparison no value could pass
}
_PROFILE_FIELDS = tuple(f.name for f in Profile._meta.concrete_fields)
_FREE_NEXT: dict[tuple[str, ...], CompiledQuery] = {}


def _free_next(names: tuple[str, ...]) -> CompiledQuery:
    query = _FREE_NEXT.get(names)
    if query is None:

        def build(*values):
            given = dict(zip(names, values, strict=True))
            requirements = {k: given[k] for k in REQUIREMENT_KEYS if k in given}
            qs = _matching(requirements, pool_id=given["pool_id"], min_health=given["min_health"], tags_in_sql=True)
            qs = _takeable(qs, {k: given[k] for k in ("released_before", "today", "quota") if k in given})
            return _selection_order(qs).select_for_update(of=("self",), skip_locked=True).values_list(*_PROFILE_FIELDS)[:1]

        query = _FREE_NEXT[names] = CompiledQuery(build, sentinels=tuple(_SLOTS[name] for name in names))
    return query


def profile_select(*, requirements: dict, agent: Agent, now) -> Profile | None:
    """Lock and return the free profile to hand `agent` (see the module docstring), or None."""
    limits = _guardrails(agent.pool, now)
    if connection.vendor != "postgresql":
        # SQLite: write transactions are serialised, so no lock to skip; tags in Python.
        candidates = _selection_order(_takeable(matching_profiles(requirements, agent), limits)).select_related("pool")
        return next((p for p in candidates if tags_match(p, requirements)), None)
    given = {"pool_id": agent.pool_id, "min_health": float(settings.TETHER_PROFILE_MIN_HEALTH_SCORE),
             **{k: requirements[k] for k in REQUIREMENT_KEYS if requirements.get(k)}, **limits}
    names = tuple(given)
    query = _free_next(names)
    for _attempt in range(_ATTEMPTS):
        found = query.objects(Profile, _PROFILE_FIELDS, *given.values())
        if not found:
            return None
        profile = found[0]
        profile.pool = agent.pool if profile.pool_id else None  # a match is in the agent's pool or none
        # Under the lock, a fresh statement: a take that committed after the query's snapshot shows.
        # Then the next attempt's statement, whose snapshot is later still, sees that holder too.
        if not PROFILE_HELD.exists(profile.pk):
            return profile
    return None


def profile_least_contended(*, requirements: dict, agent: Agent, now) -> Profile | None:
    """For a selection that may wait (none is free now): the matching profile with the fewest
    requests queued for it — held, or resting after its last release — leaving out those over
    today's quota. Not locked (the caller locks it)."""
    qs = _under_quota(matching_profiles(requirements, agent), _guardrails(agent.pool, now))
    rows = [p for p in _selection_order(qs.select_related("pool"))[:200] if tags_match(p, requirements)]
    if not rows:
        return None
    queued = dict(
        Assignment.objects.queued().filter(profile_id__in=[p.pk for p in rows])
        .values_list("profile_id").annotate(n=Count("pk")).order_by()
    )
    return min(rows, key=lambda p: queued.get(p.pk, 0))
