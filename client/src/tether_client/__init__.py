"""Tether's agent SDK: `Agent` (register, heartbeat, take and release profiles, claim tasks),
`Client` (operators: read and steer the fleet, submit tasks, follow events), browser launchers, and
the typed errors of the API. See docs/agents.md."""

__version__ = "0.1.0"

from tether_client.agent import Agent, Lease, Task  # noqa: E402
from tether_client.client import Client  # noqa: E402
from tether_client.errors import (  # noqa: E402
    AgentAtCapacity,
    AgentUnavailable,
    ApiError,
    Conflict,
    ConnectionFailed,
    Deadlock,
    Forbidden,
    IdempotencyKeyReused,
    InvalidTransition,
    NoProfileAvailable,
    NotAuthenticated,
    NotFound,
    ProfileCoolingDown,
    ProfileDisabled,
    QuotaExceeded,
    Refused,
    ServerError,
    ServiceUnavailable,
    StaleFencingToken,
    TetherError,
    Throttled,
    ValidationError,
    WaitExpired,
)
from tether_client.events import EventStream  # noqa: E402
from tether_client.launchers import ChromiumLauncher, Launcher, LaunchError, OctoLauncher  # noqa: E402
from tether_client.models import Assignment, BrowserInfo, Event  # noqa: E402

__all__ = [
    "Agent", "AgentAtCapacity", "AgentUnavailable", "ApiError", "Assignment", "BrowserInfo", "ChromiumLauncher",
    "Client", "Conflict", "ConnectionFailed", "Deadlock", "Event", "EventStream", "Forbidden",
    "IdempotencyKeyReused", "InvalidTransition", "LaunchError", "Launcher", "Lease", "NoProfileAvailable",
    "NotAuthenticated", "NotFound", "OctoLauncher", "ProfileCoolingDown", "ProfileDisabled", "QuotaExceeded",
    "Refused", "ServerError", "ServiceUnavailable", "StaleFencingToken", "Task", "TetherError", "Throttled",
    "ValidationError", "WaitExpired",
]
