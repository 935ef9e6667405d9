"""Whether a profile may be handed out now: quarantine (a holder reported it banned), the pool's
`profile_cooldown_seconds` after its last release, and the pool's `profile_daily_quota` of takes per
UTC day. Asked by every way a profile is handed out — an explicit take (`assignment_create`,
`assignments.takes`), selection by requirements (`assignments.selection`, as a filter) and the
hand-over to a queued request (`assignments.waits`) — always under the profile's row lock, which
also makes the quota's read-modify-write safe.

The pool is the taker's (the profile's own pool when it has one: a take across pools is refused).
"""

from datetime import date, datetime, timedelta

from assignments.models import Profile
from config.errors import (
    ProfileCoolingDown,
    ProfileQuarantined,
    QuotaExceeded,
    TetherError,
)
from pools.models import AgentPool


def utc_day(now: datetime) -> date:
    return now.date()  # `timezone.now()` is aware UTC: its date is the UTC day


def cooldown_until(profile: Profile, pool: AgentPool) -> datetime | None:
    """When the profile's rest after its last release ends (None: no cooldown or never released)."""
    if not pool.profile_cooldown_seconds or profile.last_released_at is None:
        return None
    return profile.last_released_at + timedelta(seconds=pool.profile_cooldown_seconds)


def profile_refusal(profile: Profile, pool: AgentPool, now: datetime) -> TetherError | None:
    """The error a take of `profile` by an agent of `pool` would get now, or None when it may be taken."""
    if profile.quarantined:
        return ProfileQuarantined(
            f"profile {profile.profile_id!r} is quarantined until an operator clears it",
            details={"profile_id": profile.profile_id, "reason": profile.quarantine_reason},
        )
    until = cooldown_until(profile, pool)
    if until is not None and now < until:
        return ProfileCoolingDown(
            f"profile {profile.profile_id!r} is cooling down until {until.isoformat()}",
            details={
                "profile_id": profile.profile_id,
                "cooldown_until": until.isoformat(),
                "retry_after": max(1, int((until - now).total_seconds() + 0.999)),
            },
        )
    quota = pool.profile_daily_quota
    if quota and profile.quota_day == utc_day(now) and profile.quota_takes >= quota:
        return QuotaExceeded(
            f"profile {profile.profile_id!r} was taken {profile.quota_takes} times today (UTC), its pool's quota is {quota}",
            details={"profile_id": profile.profile_id, "quota": quota, "taken_today": profile.quota_takes},
        )
    return None


def profile_check_takeable(profile: Profile, pool: AgentPool, now: datetime) -> None:
    refusal = profile_refusal(profile, pool, now)
    if refusal is not None:
        raise refusal


def profile_count_take(profile: Profile, now: datetime) -> list[str]:
    """Count one take towards today's quota, on the locked profile; returns the fields to save."""
    day = utc_day(now)
    if profile.quota_day != day:
        profile.quota_day = day
        profile.quota_takes = 1
    else:
        profile.quota_takes += 1
    return ["quota_day", "quota_takes"]
