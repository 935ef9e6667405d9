"""Typed exceptions for every answer Tether refuses.

The server's error shape is `{"error": {"code", "message", "details"}}` with a stable `code`; each
code maps to one class here, so an agent catches what it can handle (`Conflict` for a held profile,
`StaleFencingToken` when it lost a profile it thought it held) and lets the rest propagate.
"""

from __future__ import annotations

from typing import Any


class TetherError(Exception):
    """Base of everything this package raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailed(TetherError):
    """The server could not be reached (refused, DNS, timeout, bad URL) — after the retries."""


class ApiError(TetherError):
    """The server answered with an error. `status` is the HTTP status, `code` the stable error code,
    `details` what it concerns (fields, the holder, the current fencing token...)."""

    def __init__(self, message: str, *, status: int, code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"


class ValidationError(ApiError):
    """400: the request is malformed or names something unknown (`details` says which field)."""


class NotAuthenticated(ApiError):
    """401: no credential, or the token is invalid or revoked (e.g. the agent registered again)."""


class Forbidden(ApiError):
    """403: the credential may not do this (another agent's assignment, an operator-only action)."""


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409 `conflict`: the profile is held by someone else. `holder_agent_id` names the holder."""

    @property
    def holder_agent_id(self) -> str | None:
        return self.details.get("holder_agent_id")

    @property
    def holder_assignment_id(self) -> str | None:
        return self.details.get("holder_assignment_id")


class NoProfileAvailable(Conflict):
    """409 `no_profile_available`: no free profile matches the requirements."""


class ProfileCoolingDown(Conflict):
    """409 `profile_cooling_down`: the profile was released recently and rests."""


class QuotaExceeded(Conflict):
    """409 `quota_exceeded`: the profile's daily take quota is used up."""


class Deadlock(Conflict):
    """409 `deadlock`: waiting would close a cycle; `cycle` names the agents and profiles."""

    @property
    def cycle(self) -> Any:
        return self.details.get("cycle")


class WaitExpired(Conflict):
    """A waiting take (`wait=`) ended without the profile: the wait ran out or was cancelled."""


class StaleFencingToken(ApiError):
    """409 `stale_fencing_token`: the profile was reassigned since this token was issued — stop
    using it at once. `current_fencing_token` is the holder's."""

    @property
    def current_fencing_token(self) -> int | None:
        return self.details.get("current_fencing_token")


class Refused(ApiError):
    """409 for a state the request does not fit: at capacity, draining, disabled profile, wrong pool,
    a transition not allowed... (`code` says which)."""


class AgentAtCapacity(Refused):
    """409 `agent_at_capacity`."""


class AgentUnavailable(Refused):
    """409 `agent_unavailable`: the agent is draining, stale or inactive."""


class ProfileDisabled(Refused):
    """409 `profile_disabled`."""


class InvalidTransition(Refused):
    """409 `invalid_transition`."""


class IdempotencyKeyReused(ApiError):
    """422: the Idempotency-Key was used before with a different request."""


class Throttled(ApiError):
    """429 after the retries ran out. `retry_after` is the server's hint, in seconds."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        return float(value) if isinstance(value, (int, float)) else None


class ServiceUnavailable(ApiError):
    """503 after the retries ran out (the database or a dependency is down)."""


class ServerError(ApiError):
    """5xx: a server bug (it is logged there)."""


_BY_CODE: dict[str, type[ApiError]] = {
    "validation_error": ValidationError,
    "parse_error": ValidationError,
    "bad_request": ValidationError,
    "not_authenticated": NotAuthenticated,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "no_profile_available": NoProfileAvailable,
    "profile_cooling_down": ProfileCoolingDown,
    "quota_exceeded": QuotaExceeded,
    "deadlock": Deadlock,
    "stale_fencing_token": StaleFencingToken,
    "agent_at_capacity": AgentAtCapacity,
    "agent_unavailable": AgentUnavailable,
    "profile_disabled": ProfileDisabled,
    "invalid_transition": InvalidTransition,
    "idempotency_key_reused": IdempotencyKeyReused,
    "throttled": Throttled,
    "service_unavailable": ServiceUnavailable,
    "server_error": ServerError,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationError,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    409: Refused,
    422: ValidationError,
    429: Throttled,
    503: ServiceUnavailable,
}


def error_for(status: int, body: Any) -> ApiError:
    """The exception for an error answer: by its `code` when the body has the error shape, else by
    the HTTP status (a proxy's HTML page, say)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        message = str(error.get("message") or code)
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    else:
        code, message, details = f"http_{status}", f"HTTP {status}", {}
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(message, status=status, code=code, details=details)
