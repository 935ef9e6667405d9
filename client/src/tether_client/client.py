"""`Client`: Tether for operators and services — read the fleet, steer it, submit work, follow events.

    ops = Client("http://tether:8000", token=OPERATOR_TOKEN)
    ops.drain("worker-7")
    for event in ops.events(since=0): ...

Reads return the API's JSON (dicts, as DESIGN.md shapes them); lists follow every page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tether_client._http import Http, as_object, new_idempotency_key
from tether_client.events import EventStream
from tether_client.models import Assignment

Json = dict[str, Any]


class Client:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0, max_retries: int = 5,
                 http: Http | None = None) -> None:
        self.http = http or Http(base_url, token=token, timeout=timeout, max_retries=max_retries)
        self.base_url = self.http.base_url

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pools ----------------------------------------------------------------------------------

    def pools(self, *, limit: int | None = None, **filters: Any) -> list[Json]:
        return list(self.http.iterate("/api/pools", params=filters, limit=limit))

    def pool(self, name: str) -> Json:
        return as_object(self.http.get(f"/api/pools/{name}"))

    def create_pool(self, name: str, **fields: Any) -> Json:
        """The reply carries the pool's `enrollment_token`, once."""
        return as_object(self.http.post("/api/pools", {"name": name, **fields}))

    def update_pool(self, name: str, **fields: Any) -> Json:
        return as_object(self.http.request("PATCH", f"/api/pools/{name}", json=fields))

    # --- agents ---------------------------------------------------------------------------------

    def agents(self, *, limit: int | None = None, **filters: Any) -> list[Json]:
        return list(self.http.iterate("/api/agents", params=filters, limit=limit))

    def agent(self, agent_id: str) -> Json:
        return as_object(self.http.get(f"/api/agents/{agent_id}"))

    def discover(self, **filters: Any) -> list[Json]:
        return list(self.http.post("/api/agents/discover", filters, retry_safe=True).get("results", []))

    def drain(self, agent_id: str) -> Json:
        """Stop new work for the agent and move its assignments away (operators)."""
        return as_object(self.http.post(f"/api/agents/{agent_id}/drain", retry_safe=True))

    def deregister(self, agent_id: str) -> Json:
        return as_object(self.http.request("DELETE", f"/api/agents/{agent_id}"))

    # --- profiles -------------------------------------------------------------------------------

    def profiles(self, *, limit: int | None = None, **filters: Any) -> list[Json]:
        return list(self.http.iterate("/api/profiles", params=filters, limit=limit))

    def profile(self, profile_id: str) -> Json:
        return as_object(self.http.get(f"/api/profiles/{profile_id}"))

    def create_profile(self, profile_id: str, **fields: Any) -> Json:
        return as_object(self.http.post("/api/profiles", {"profile_id": profile_id, **fields}))

    def holder(self, profile_id: str) -> Json:
        """`{"profile_id", "available", "assignment"}`: who holds the profile now."""
        return as_object(self.http.get(f"/api/profiles/{profile_id}/assignment"))

    def is_available(self, profile_id: str) -> bool:
        return bool(self.holder(profile_id).get("available"))

    # --- assignments ----------------------------------------------------------------------------

    def assignments(self, *, limit: int | None = None, **filters: Any) -> list[Json]:
        """Filters: `status`, `agent_id`, `profile_id`, `pool`, `workflow_id`."""
        return list(self.http.iterate("/api/assignments", params=filters, limit=limit))

    def assignment(self, assignment_id: str) -> Assignment:
        return Assignment.from_json(self.http.get(f"/api/assignments/{assignment_id}"))

    def release(self, assignment_id: str, *, fencing_token: int | None = None) -> Assignment:
        """Release (idempotent). An operator releasing one whose agent is alive makes it `releasing`:
        the agent is told and confirms."""
        body = {"fencing_token": fencing_token} if fencing_token is not None else None
        return Assignment.from_json(self.http.request("DELETE", f"/api/assignments/{assignment_id}", json=body))

    def metrics(self, **params: Any) -> Json:
        return as_object(self.http.get("/api/assignments/metrics", params=params))

    # --- tasks ----------------------------------------------------------------------------------

    def submit(self, *, pool: str, payload: Mapping[str, Any], priority: str = "normal",
               requirements: Mapping[str, Any] | None = None, task_id: str | None = None,
               idempotency_key: str | None = None, **fields: Any) -> Json:
        """Queue a task (`POST /api/tasks`, with an Idempotency-Key so a retry never queues it twice)."""
        body: dict[str, Any] = {"pool": pool, "payload": dict(payload), "priority": priority, **fields}
        if requirements is not None:
            body["requirements"] = dict(requirements)
        if task_id is not None:
            body["task_id"] = task_id
        return as_object(self.http.post("/api/tasks", body, idempotency_key=idempotency_key or new_idempotency_key()))

    def submit_batch(self, tasks: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None) -> list[Json]:
        data = self.http.post("/api/tasks/batch", {"tasks": [dict(t) for t in tasks]},
                              idempotency_key=idempotency_key or new_idempotency_key())
        return list(data.get("tasks", []))

    def tasks(self, *, limit: int | None = None, **filters: Any) -> list[Json]:
        """Filters: `status`, `pool`, `priority`, `agent_id`."""
        return list(self.http.iterate("/api/tasks", params=filters, limit=limit))

    def task(self, task_id: str) -> Json:
        return as_object(self.http.get(f"/api/tasks/{task_id}"))

    def cancel_task(self, task_id: str) -> Json:
        return as_object(self.http.post(f"/api/tasks/{task_id}/cancel", retry_safe=True))

    def task_status(self, pool: str | None = None) -> Json:
        return as_object(self.http.get("/api/tasks/status", params={"pool": pool}))

    def queues(self, pool: str | None = None) -> Json:
        return as_object(self.http.get("/api/tasks/queues", params={"pool": pool}))

    def clear_queue(self, priority: str, pool: str | None = None) -> Json:
        return as_object(self.http.post(f"/api/tasks/queues/{priority}/clear", params={"pool": pool}, retry_safe=True))

    # --- events ---------------------------------------------------------------------------------

    def events(self, since: int | None = 0, *, types: Sequence[str] | str | None = None, pool: str | None = None,
               agent_id: str | None = None, profile_id: str | None = None, reconnect: bool = True,
               use_websocket: bool = True) -> EventStream:
        """Every event after `since`, then live ones, over the WebSocket; reconnects from the last
        seq it handed out, so none is missed or repeated. `since=None`: only events from now on.
        Iterate it, or `get(timeout)`."""
        return EventStream(self.http, since=since, types=types, pool=pool, agent_id=agent_id,
                           profile_id=profile_id, reconnect=reconnect, use_websocket=use_websocket)

    def events_page(self, since: int = 0, *, limit: int | None = None, **filters: Any) -> Json:
        """One page of the log over HTTP: `{"next", "last_seq", "results"}`."""
        return as_object(self.http.get("/api/events", params={"since": since, "limit": limit, **filters}))

    def health(self) -> Json:
        return as_object(self.http.get("/health"))
