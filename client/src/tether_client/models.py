"""The objects the SDK hands back, read from the API's JSON. Each keeps the whole JSON in `raw`, so a
field the server adds later is there before this package names it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LIVE_ASSIGNMENT_STATUSES = frozenset({"pending", "active", "idle", "releasing"})


@dataclass
class Assignment:
    assignment_id: str
    profile_id: str
    agent_id: str | None
    pool: str | None
    status: str
    fencing_token: int
    workflow_id: str = ""
    release_reason: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    queue_position: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Assignment:
        return cls(
            assignment_id=str(data["assignment_id"]),
            profile_id=str(data.get("profile_id") or ""),
            agent_id=data.get("agent_id"),
            pool=data.get("pool"),
            status=str(data.get("status") or ""),
            fencing_token=int(data.get("fencing_token") or 0),
            workflow_id=data.get("workflow_id") or "",
            release_reason=data.get("release_reason") or "",
            metadata=data.get("metadata") or {},
            queue_position=data.get("queue_position"),
            raw=data,
        )

    @property
    def live(self) -> bool:
        return self.status in LIVE_ASSIGNMENT_STATUSES


@dataclass
class Event:
    """One message of the event log: `{"seq", "type", "occurred_at", "actor", "assignment_id",
    "profile_id", "agent_id", "pool", "from_status", "to_status", "data"}`."""

    seq: int
    type: str
    occurred_at: str | None = None
    actor: Any = None
    assignment_id: str | None = None
    profile_id: str | None = None
    agent_id: str | None = None
    pool: str | None = None
    from_status: str | None = None
    to_status: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            seq=int(data["seq"]),
            type=str(data.get("type") or ""),
            occurred_at=data.get("occurred_at"),
            actor=data.get("actor"),
            assignment_id=data.get("assignment_id"),
            profile_id=data.get("profile_id"),
            agent_id=data.get("agent_id"),
            pool=data.get("pool"),
            from_status=data.get("from_status"),
            to_status=data.get("to_status"),
            data=data.get("data") or {},
            raw=data,
        )


@dataclass
class BrowserInfo:
    """What a launcher started: where to attach automation (a CDP WebSocket endpoint)."""

    profile_id: str
    ws_endpoint: str | None = None
    debug_port: int | None = None
    pid: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
