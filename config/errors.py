"""Domain errors raised by services. The API maps each `code` to its HTTP status in one place."""


class TetherError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, *, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationFailed(TetherError):
    code = "validation_error"
    http_status = 400


class NotFound(TetherError):
    code = "not_found"
    http_status = 404


class Forbidden(TetherError):
    code = "forbidden"
    http_status = 403


class Conflict(TetherError):
    """The profile is held by someone else; `details` names the holder and its assignment."""

    code = "conflict"
    http_status = 409


class StaleFencingToken(TetherError):
    code = "stale_fencing_token"
    http_status = 409


class AgentAtCapacity(TetherError):
    code = "agent_at_capacity"
    http_status = 409


class AgentUnavailable(TetherError):
    """The agent is draining, stale or inactive and may not take work."""

    code = "agent_unavailable"
    http_status = 409


class ProfileDisabled(TetherError):
    code = "profile_disabled"
    http_status = 409


class PoolMismatch(TetherError):
    code = "pool_mismatch"
    http_status = 409


class InvalidTransition(TetherError):
    code = "invalid_transition"
    http_status = 409


class ProfileTaken(Conflict):
    """A take refused because the profile is held; `details` names the holder."""

    def __init__(self, message: str, *, details: dict, pool_name: str = ""):
        super().__init__(message, details=details)
        self.pool_name = pool_name


class Deadlock(TetherError):
    """Waiting for this profile would close a cycle of agents waiting for each other (`details.cycle`)."""

    code = "deadlock"
    http_status = 409


class NoProfileAvailable(TetherError):
    """No free profile matches the requirements (enabled, healthy, not quarantined, not cooling down)."""

    code = "no_profile_available"
    http_status = 409


class ProfileCoolingDown(TetherError):
    code = "profile_cooling_down"
    http_status = 409


class QuotaExceeded(TetherError):
    code = "quota_exceeded"
    http_status = 409


class ProfileQuarantined(TetherError):
    code = "profile_quarantined"
    http_status = 409
