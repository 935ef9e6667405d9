"""Choosing a profile by requirements (DESIGN.md, "Choosing a profile and keeping it healthy").

`profile_select` picks and LOCKS a free profile that matches `{"tags": [...], "region", "pool"}`,
is enabled, not quarantined, healthy (`TETHER_PROFILE_MIN_HEALTH_SCORE`), not cooling down and under
its daily quota — the one released longest ago first (never released first). Atomic under any
concurrency: `FOR UPDATE SKIP LOCKED` lets concurrent selections pass over each other's candidate
instead of queueing behind it (and then all taking the next one), and the holder is checked again
under the lock, so no two requests ever get one profile; the partial unique index of invariant 1
stays the last word.
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q

from agents.models import Agent
from assignments.guardrails import utc_day
from assignments.models import Assignment, Profile, holding_q
from config.errors import ValidationFailed
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
    qs = Profile.objects.filter(enabled=True, quarantined=False,
                                health_score__gte=settings.TETHER_PROFILE_MIN_HEALTH_SCORE)
    qs = qs.filter(Q(pool__isnull=True) | Q(pool_id=agent.pool_id))
    if "pool" in requirements:
        qs = qs.filter(pool__name=requirements["pool"])
    if "region" in requirements:
        qs = qs.filter(region=requirements["region"])
    if requirements.get("tags") and connection.vendor == "postgresql":
        qs = qs.filter(tags__contains=requirements["tags"])
    return qs


def tags_match(profile: Profile, requirements: dict) -> bool:
    return set(requirements.get("tags", ())) <= set(profile.tags or ())


def _takeable_now(qs, pool, now):
    """Free (no holder), not cooling down, under the daily quota."""
    qs = qs.filter(~Exists(Assignment.objects.filter(holding_q(), profile=OuterRef("pk"))))
    if pool.profile_cooldown_seconds:
        qs = qs.filter(Q(last_released_at__isnull=True)
                       | Q(last_released_at__lte=now - timedelta(seconds=pool.profile_cooldown_seconds)))
    if pool.profile_daily_quota:
        qs = qs.filter(Q(quota_day__isnull=True) | ~Q(quota_day=utc_day(now)) | Q(quota_takes__lt=pool.profile_daily_quota))
    return qs


def profile_select(*, requirements: dict, agent: Agent, now) -> Profile | None:
    """Lock and return the free profile to hand `agent` (see the module docstring), or None."""
    candidates = _takeable_now(matching_profiles(requirements, agent), agent.pool, now)
    ordered = candidates.order_by(F("last_released_at").asc(nulls_first=True), "pk")
    passed: list[int] = []
    for _attempt in range(_ATTEMPTS):
        if connection.vendor == "postgresql":
            profile = (
                ordered.exclude(pk__in=passed)
                .select_for_update(of=("self",), skip_locked=True).select_related("pool").first()
            )
        else:
            # SQLite: write transactions are serialised, so no lock to skip; tags in Python.
            profile = next((p for p in ordered.exclude(pk__in=passed).select_related("pool") if tags_match(p, requirements)), None)
        if profile is None:
            return None
        # Under the lock, a fresh statement: a take that committed after the query's snapshot shows.
        if not Assignment.objects.holding().filter(profile=profile).exists():
            return profile
        passed.append(profile.pk)
    return None


def profile_least_contended(*, requirements: dict, agent: Agent, now) -> Profile | None:
    """For a selection that may wait (none is free now): the matching profile with the fewest
    requests queued for it — held, or resting after its last release — leaving out those over
    today's quota. Not locked (the caller locks it)."""
    pool = agent.pool
    qs = matching_profiles(requirements, agent)
    if pool.profile_daily_quota:
        qs = qs.filter(Q(quota_day__isnull=True) | ~Q(quota_day=utc_day(now)) | Q(quota_takes__lt=pool.profile_daily_quota))
    rows = [p for p in qs.select_related("pool").order_by(F("last_released_at").asc(nulls_first=True), "pk")[:200]
            if tags_match(p, requirements)]
    if not rows:
        return None
    queued = dict(
        Assignment.objects.queued().filter(profile_id__in=[p.pk for p in rows])
        .values_list("profile_id").annotate(n=Count("pk")).order_by()
    )
    return min(rows, key=lambda p: queued.get(p.pk, 0))
