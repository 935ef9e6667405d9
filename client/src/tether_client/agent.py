"""`Agent`: one automation worker's side of Tether.

    agent = Agent.register(url, enrollment_token=..., agent_id="w1", pool="k8s-prod")
    agent.start()                                  # heartbeats in a background thread
    with agent.profile("octo-7") as lease:         # take … release, even on an exception
        drive(lease.browser.ws_endpoint, fencing_token=lease.fencing_token)

What the heartbeat does, every `heartbeat_interval` seconds (a third of the pool's heartbeat timeout
unless given): it reports what the agent holds and how many browsers its launcher runs, then applies
the reply — `revoked` assignments (an operator's force-release, a drain, a failover elsewhere) are
dropped and their browsers stopped; `assigned` ones (given to it by failover) are picked up, and their
browsers started. A browser that runs for a profile the agent does not hold is stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tether_client._http import Http, as_object, new_idempotency_key
from tether_client.errors import (
    ApiError,
    ConnectionFailed,
    Forbidden,
    NotFound,
    StaleFencingToken,
    TetherError,
    WaitExpired,
)
from tether_client.events import EventStream
from tether_client.launchers.base import Launcher
from tether_client.models import Assignment, BrowserInfo

log = logging.getLogger("tether_client")

DEFAULT_HEARTBEAT_INTERVAL = 10.0
_WAIT_POLL_SECONDS = 0.5  # where no event stream can be opened
_WAIT_RECHECK_SECONDS = 5.0  # with one: the safety-net read while waiting
_WAIT_GRACE_SECONDS = 10.0


class Lease:
    """A profile this agent holds: `assignment_id`, `profile_id`, `fencing_token`, the launched
    `browser` (None without a launcher). A context manager: leaving the block releases it (after
    stopping the browser), whatever ended the block. `revoked` turns true when Tether took it back;
    the agent must then stop acting on the profile at once."""

    def __init__(self, agent: Agent, assignment: Assignment) -> None:
        self.agent = agent
        self.assignment = assignment
        self.browser: BrowserInfo | None = None
        self.released = False
        self._revoked = threading.Event()
        self._releasing = False

    def __repr__(self) -> str:
        return f"<Lease {self.profile_id} assignment={self.assignment_id} token={self.fencing_token}>"

    @property
    def assignment_id(self) -> str:
        return self.assignment.assignment_id

    @property
    def profile_id(self) -> str:
        return self.assignment.profile_id

    @property
    def fencing_token(self) -> int:
        return self.assignment.fencing_token

    @property
    def revoked(self) -> bool:
        return self._revoked.is_set()

    def wait_revoked(self, timeout: float | None = None) -> bool:
        """Block until Tether revokes this lease (True) or `timeout` passes (False)."""
        return self._revoked.wait(timeout)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- writes, each fenced ----------------------------------------------------------------------

    def update(self, *, status: str | None = None, metadata: Mapping[str, Any] | None = None,
               platform_resource_id: str | None = None) -> Assignment:
        """`PATCH /api/assignments/{id}` with this lease's fencing token (`StaleFencingToken` if the
        profile was reassigned since)."""
        body: dict[str, Any] = {"fencing_token": self.fencing_token}
        if status is not None:
            body["status"] = status
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if platform_resource_id is not None:
            body["platform_resource_id"] = platform_resource_id
        data = self.agent.http.request("PATCH", f"/api/assignments/{self.assignment_id}", json=body, retry_safe=True)
        self.assignment = Assignment.from_json(data)
        return self.assignment

    def idle(self) -> Assignment:
        return self.update(status="idle")

    def active(self) -> Assignment:
        return self.update(status="active")

    def report(self, outcome: str, detail: str = "") -> Any:
        """How the profile fared: `success`, `failure`, `captcha` or `banned`
        (`POST /api/profiles/{profile_id}/report`)."""
        body: dict[str, Any] = {"outcome": outcome}
        if detail:
            body["detail"] = detail
        return self.agent.http.post(f"/api/profiles/{self.profile_id}/report", body, retry_safe=True)

    def refresh(self) -> Assignment:
        self.assignment = Assignment.from_json(self.agent.http.get(f"/api/assignments/{self.assignment_id}"))
        return self.assignment

    def release(self) -> None:
        """Stop the browser, then release (`DELETE`, fenced). Idempotent; after a revocation there is
        nothing left to release (the heartbeat confirmed it)."""
        if self.released:
            return
        self._releasing = True
        try:
            self.agent._stop_browser(self.profile_id)
            if not self.revoked:
                try:
                    self.agent.http.request("DELETE", f"/api/assignments/{self.assignment_id}",
                                            json={"fencing_token": self.fencing_token})
                except (StaleFencingToken, Forbidden, NotFound):
                    # Moved to another agent (or gone) since: nothing of ours to release.
                    self._revoked.set()
        finally:
            self.released = True
            self.agent._forget(self.assignment_id)


class Task:
    """A task handed to this agent: `task_id`, `payload`, `attempt` (the task's fencing token),
    `priority`, `pool`, `assignment_id` (when it came with a profile). `start()`, `complete(result)`,
    `fail(why, retry=)` each send `attempt`; a stale one raises `StaleFencingToken`."""

    def __init__(self, agent: Agent, data: dict[str, Any]) -> None:
        self.agent = agent
        self.raw = data
        self.task_id: str = str(data["task_id"])
        self.payload: dict[str, Any] = data.get("payload") or {}
        self.attempt: int = int(data.get("attempt") or 0)
        self.priority: str | None = data.get("priority")
        self.pool: str | None = data.get("pool")
        self.status: str | None = data.get("status")
        self.assignment_id: str | None = data.get("assignment_id")
        self.requirements: dict[str, Any] = data.get("requirements") or {}

    def __repr__(self) -> str:
        return f"<Task {self.task_id} attempt={self.attempt} status={self.status}>"

    def _act(self, action: str, body: dict[str, Any]) -> Task:
        data = self.agent.http.post(f"/api/tasks/{self.task_id}/{action}", {"attempt": self.attempt, **body},
                                    retry_safe=True)
        if isinstance(data, dict) and "task_id" in data:
            self.raw = data
            self.status = data.get("status")
        return self

    def start(self) -> Task:
        return self._act("start", {})

    def complete(self, result: Any = None) -> Task:
        return self._act("complete", {"result": result if result is not None else {}})

    def fail(self, error: str, *, retry: bool = False) -> Task:
        return self._act("fail", {"error": error, "retry": retry})

    def lease(self) -> Lease | None:
        """The profile this task came with, as a lease of this agent (released with the lease)."""
        if not self.assignment_id:
            return None
        return self.agent.adopt(self.assignment_id)


class Agent:
    def __init__(
        self,
        base_url: str,
        *,
        agent_id: str,
        token: str,
        launcher: Launcher | None = None,
        heartbeat_interval: float | None = None,
        load_metrics: Callable[[], Mapping[str, Any]] | None = None,
        on_revoked: Callable[[Lease], None] | None = None,
        on_assigned: Callable[[Lease], None] | None = None,
        stop_unheld_browsers: bool = True,
        launch_assigned: bool = True,
        timeout: float = 30.0,
        max_retries: int = 5,
        http: Http | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.http = http or Http(base_url, token=token, timeout=timeout, max_retries=max_retries)
        self.base_url = self.http.base_url
        self.launcher = launcher
        self.heartbeat_interval = heartbeat_interval
        self.load_metrics = load_metrics
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned
        self.stop_unheld_browsers = stop_unheld_browsers
        self.launch_assigned = launch_assigned
        self.status: str | None = None
        self.health_score: float | None = None
        self.last_heartbeat_error: TetherError | None = None
        self.registration: dict[str, Any] = {}
        self._held: dict[str, Lease] = {}
        self._lock = threading.RLock()  # guards _held and the take bookkeeping below
        self._beat_lock = threading.Lock()  # one heartbeat at a time
        self._takes_in_flight = 0
        self._take_generation = 0
        self._waiting_ids: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- registration ---------------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        base_url: str,
        *,
        agent_id: str,
        pool: str,
        enrollment_token: str | None = None,
        token: str | None = None,
        idempotency_key: str | None = None,
        launcher: Launcher | None = None,
        heartbeat_interval: float | None = None,
        agent_options: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Agent:
        """Register (or register again) with the pool's enrollment token — or an operator's `token` —
        and return the agent with its own new token. `fields` are the agent's writable fields
        (`capabilities`, `capacity`, `agent_type`, `tags`, `region`, `version`, `metadata`...).
        Registering again starts a new incarnation: the old token stops working and what it held
        fails over (the first heartbeat's `assigned` says what this one holds)."""
        http = Http(base_url, token=token)
        headers = {"X-Enrollment-Token": enrollment_token} if enrollment_token else None
        body = {"agent_id": agent_id, "pool": pool, **fields}
        data = http.post("/api/agents/register", body, headers=headers,
                         idempotency_key=idempotency_key or new_idempotency_key())
        http.close()
        agent = cls(base_url, agent_id=agent_id, token=data["token"], launcher=launcher,
                    heartbeat_interval=heartbeat_interval, **dict(agent_options or {}))
        agent.registration = data
        agent.status = data.get("status")
        return agent

    @property
    def token(self) -> str | None:
        return self.http.token

    @property
    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def info(self) -> dict[str, Any]:
        return as_object(self.http.get(f"/api/agents/{self.agent_id}"))

    def assignments(self, status: str | None = None) -> list[Assignment]:
        """What the server says this agent holds (live ones by default; `status="all"`)."""
        items = self.http.iterate(f"/api/agents/{self.agent_id}/assignments", params={"status": status})
        return [Assignment.from_json(item) for item in items]

    def set_status(self, status: str, *, load_metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status}
        if load_metrics is not None:
            body["load_metrics"] = dict(load_metrics)
        data = self.http.request("PUT", f"/api/agents/{self.agent_id}/status", json=body)
        self.status = data.get("status")
        return as_object(data)

    def deregister(self) -> dict[str, Any]:
        """Leave the pool: the token stops working and what the agent held fails over."""
        self.stop()
        for lease in self.held:
            self._stop_browser(lease.profile_id)
            lease._revoked.set()
            self._forget(lease.assignment_id)
        return as_object(self.http.request("DELETE", f"/api/agents/{self.agent_id}"))

    # --- taking profiles ------------------------------------------------------------------------

    def profile(
        self,
        profile_id: str | None = None,
        *,
        requirements: Mapping[str, Any] | None = None,
        wait: float = 0,
        workflow_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: int | None = None,
        launch: bool = True,
    ) -> Lease:
        """Take a profile — by id, or any free one matching `requirements` (`tags`, `region`, `pool`)
        — and launch its browser. Returns a `Lease`; use it as a context manager to release it.

        `wait` > 0 waits up to that many seconds for a held profile (the server queues the request);
        without it a held profile raises `Conflict` at once (`.holder_agent_id`). Selection with no
        match raises `NoProfileAvailable`; a wait that ends without the profile, `WaitExpired`."""
        if (profile_id is None) == (requirements is None):
            raise ValueError("give a profile_id or requirements (not both)")
        body: dict[str, Any] = {"agent_id": self.agent_id}
        if profile_id is not None:
            body["profile_id"] = profile_id
        else:
            body["profile_requirements"] = dict(requirements or {})
        if workflow_id is not None:
            body["workflow_id"] = workflow_id
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if wait:
            body["wait_seconds"] = int(wait) if float(wait).is_integer() else wait
        if priority is not None:
            body["priority"] = priority
        with self._lock:
            self._takes_in_flight += 1
            self._take_generation += 1
        try:
            data = self.http.post("/api/assignments", body, idempotency_key=new_idempotency_key())
            assignment = Assignment.from_json(data)
            if assignment.status == "pending":
                assignment = self._wait_until_active(assignment, wait)
            lease = Lease(self, assignment)
            with self._lock:
                self._held[assignment.assignment_id] = lease
        finally:
            with self._lock:
                self._takes_in_flight -= 1
                self._take_generation += 1
        if launch and self.launcher is not None:
            try:
                lease.browser = self.launcher.launch(lease.profile_id, lease.assignment)
            except BaseException:
                lease.release()  # no browser: give the profile back rather than sit on it
                raise
        return lease

    take = profile

    def _wait_until_active(self, assignment: Assignment, wait: float) -> Assignment:
        """A queued take (202, `pending`): wait until it becomes active (a new fencing token) or ends.

        The agent hears of the hand-over on the event stream (DESIGN.md: its own `agent_id`'s events,
        from the moment the wait begins), so nothing polls the server while it waits: one read
        after subscribing (a hand-over committed before the subscription), one when an event names
        this request, and one every few seconds as a safety net (a stream that reconnected before
        it had seen any event cannot resume). Where no stream can be opened it polls instead."""
        deadline = time.monotonic() + float(wait) + _WAIT_GRACE_SECONDS
        with self._lock:
            self._waiting_ids.add(assignment.assignment_id)
        stream = self._open_own_events()
        try:
            if stream is not None:
                assignment = self._get_assignment(assignment.assignment_id)
            while True:
                if assignment.status in ("active", "idle"):
                    return assignment
                if not assignment.live:
                    raise WaitExpired(
                        f"waiting for profile {assignment.profile_id!r} ended: {assignment.status}"
                        + (f" ({assignment.release_reason})" if assignment.release_reason else ""),
                        status=409, code="wait_expired", details={"assignment_id": assignment.assignment_id},
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    try:  # give up our place in the queue
                        self.http.request("DELETE", f"/api/assignments/{assignment.assignment_id}")
                    except ApiError:
                        pass
                    raise WaitExpired(f"profile {assignment.profile_id!r} was not free within {wait}s",
                                      status=409, code="wait_expired",
                                      details={"assignment_id": assignment.assignment_id})
                if stream is None:
                    time.sleep(min(_WAIT_POLL_SECONDS, remaining))
                else:
                    try:
                        event = stream.get(timeout=min(_WAIT_RECHECK_SECONDS, remaining))
                    except TetherError as exc:  # the stream refused us after all: poll instead
                        log.info("waiting for %s without the event stream: %s", assignment.assignment_id, exc)
                        stream.close()
                        stream = None
                        continue
                    if event is not None and event.assignment_id != assignment.assignment_id:
                        continue  # another of our assignments
                assignment = self._get_assignment(assignment.assignment_id)
        finally:
            if stream is not None:
                stream.close()
            with self._lock:
                self._waiting_ids.discard(assignment.assignment_id)

    def _open_own_events(self) -> EventStream | None:
        """This agent's events from now on, subscribed before this returns; None where the stream
        cannot be opened (then the caller polls)."""
        stream = EventStream(self.http, since=None, agent_id=self.agent_id, poll_interval=_WAIT_POLL_SECONDS)
        try:
            return stream.open()
        except TetherError as exc:
            log.info("no event stream for %s (%s): polling while it waits", self.agent_id, exc)
            stream.close()
            return None

    def _get_assignment(self, assignment_id: str) -> Assignment:
        return Assignment.from_json(self.http.get(f"/api/assignments/{assignment_id}"))

    def adopt(self, assignment_id: str, *, launch: bool | None = None) -> Lease:
        """Hold an assignment the server gave this agent (failover, a task's profile) as a lease."""
        with self._lock:
            if assignment_id in self._held:
                return self._held[assignment_id]
        assignment = Assignment.from_json(self.http.get(f"/api/assignments/{assignment_id}"))
        lease = Lease(self, assignment)
        with self._lock:
            existing = self._held.setdefault(assignment_id, lease)
        if existing is not lease:
            return existing
        if self.launcher is not None and (self.launch_assigned if launch is None else launch):
            try:
                lease.browser = self.launcher.launch(lease.profile_id, assignment)
            except Exception:  # noqa: BLE001 — keep the lease; the next heartbeat reports no browser
                log.exception("could not launch the browser of %s", lease.profile_id)
        return lease

    def release_all(self) -> None:
        for lease in self.held:
            lease.release()

    def _forget(self, assignment_id: str) -> None:
        with self._lock:
            self._held.pop(assignment_id, None)

    def _stop_browser(self, profile_id: str) -> None:
        if self.launcher is None:
            return
        try:
            self.launcher.stop(profile_id)
        except Exception:  # noqa: BLE001 — a browser that will not stop must not block the release
            log.exception("could not stop the browser of %s", profile_id)

    # --- tasks ----------------------------------------------------------------------------------

    def claim(self, max: int = 1, wait: float = 0) -> list[Task]:  # noqa: A002 — DESIGN.md's name
        """The tasks assigned to this agent, highest priority first (`POST
        /api/agents/{agent_id}/tasks/claim`); with `wait`, long-polls up to that many seconds."""
        body: dict[str, Any] = {"max": max}
        if wait:
            body["wait_seconds"] = int(wait) if float(wait).is_integer() else wait
        data = self.http.post(f"/api/agents/{self.agent_id}/tasks/claim", body, retry_safe=True,
                              timeout=float(wait) + 30.0)
        items = data if isinstance(data, list) else (data or {}).get("tasks", (data or {}).get("results", []))
        return [Task(self, item) for item in items]

    def submit(self, *, pool: str, payload: Mapping[str, Any], priority: str = "normal",
               idempotency_key: str | None = None, **fields: Any) -> dict[str, Any]:
        """Submit a task to this agent's pool (agents of a pool may)."""
        body = {"pool": pool, "payload": dict(payload), "priority": priority, **fields}
        return as_object(self.http.post("/api/tasks", body, idempotency_key=idempotency_key or new_idempotency_key()))

    # --- heartbeats -----------------------------------------------------------------------------

    def heartbeat(self) -> dict[str, Any]:
        """Send one heartbeat and apply its reply. Returns the reply."""
        with self._beat_lock:
            running: set[str] | None = None
            if self.launcher is not None:
                try:
                    running = self.launcher.running()
                except Exception:  # noqa: BLE001 — report no count rather than skip the heartbeat
                    log.exception("the launcher could not list its browsers")
            metrics: dict[str, Any] = dict(self.load_metrics()) if self.load_metrics else {}
            if running is not None:
                metrics["browsers_running"] = len(running)
            with self._lock:
                reported = list(self._held)
                generation = self._take_generation
                takes_in_flight = self._takes_in_flight
            body: dict[str, Any] = {"assignments": reported}
            if metrics:
                body["load_metrics"] = metrics
            if running is not None:
                # What the launcher says runs here: the server names those this agent does not hold.
                body["running_profiles"] = sorted(running)
            reply = self.http.post(f"/api/agents/{self.agent_id}/heartbeat", body, retry_safe=True)
            self.status = reply.get("status")
            self.health_score = reply.get("health_score")
            for assignment_id in reply.get("revoked", []):
                self._revoke(str(assignment_id))
            for profile_id in reply.get("stop_profiles", []):
                self._stop_unheld(str(profile_id))
            with self._lock:
                # A take that ran during this heartbeat may be in `assigned` before it is in _held:
                # leave those to the next heartbeat rather than hold one assignment twice.
                quiet = takes_in_flight == 0 and generation == self._take_generation
                waiting = set(self._waiting_ids)
            if quiet:
                for assignment_id in reply.get("assigned", []):
                    assignment_id = str(assignment_id)
                    with self._lock:
                        known = assignment_id in self._held
                    if known or assignment_id in waiting:
                        continue
                    try:
                        lease = self.adopt(assignment_id)
                    except NotFound:
                        continue
                    if self.on_assigned is not None:
                        self.on_assigned(lease)
                if running is not None and self.stop_unheld_browsers:
                    with self._lock:
                        held_profiles = {lease.profile_id for lease in self._held.values()}
                    for profile_id in running - held_profiles:
                        log.warning("stopping the browser of %s: this agent does not hold it", profile_id)
                        self._stop_browser(profile_id)
            return as_object(reply)

    def _stop_unheld(self, profile_id: str) -> None:
        """The server says this agent does not hold `profile_id`, whose browser runs here: a lease of
        ours on it is stale (revoke it: stop and release, fenced); otherwise just stop the browser."""
        with self._lock:
            stale = [lease.assignment_id for lease in self._held.values() if lease.profile_id == profile_id]
        for assignment_id in stale:
            self._revoke(assignment_id)  # stops the browser too
        if not stale:
            log.warning("stopping the browser of %s: Tether says this agent does not hold it", profile_id)
            self._stop_browser(profile_id)

    def _revoke(self, assignment_id: str) -> None:
        with self._lock:
            lease = self._held.get(assignment_id)
        if lease is None or lease._releasing:
            return
        log.warning("assignment %s (%s) was revoked: stopping its browser", assignment_id, lease.profile_id)
        lease._revoked.set()
        self._stop_browser(lease.profile_id)
        try:
            # Confirm at once (an operator's force-release waits for it); fenced, so it can never
            # touch the assignment once it has moved on to another holder.
            self.http.request("DELETE", f"/api/assignments/{assignment_id}", json={"fencing_token": lease.fencing_token})
        except (ApiError, ConnectionFailed):
            pass  # moved on, or unreachable: not reporting it at the next heartbeat confirms it too
        lease.released = True
        self._forget(assignment_id)
        if self.on_revoked is not None:
            self.on_revoked(lease)

    def _resolve_interval(self) -> float:
        if self.heartbeat_interval:
            return float(self.heartbeat_interval)
        try:
            pool = self.info().get("pool")
            timeout = self.http.get(f"/api/pools/{pool}").get("heartbeat_timeout_seconds")
            return max(1.0, min(30.0, float(timeout) / 3))
        except (TetherError, TypeError, ValueError, AttributeError):
            return DEFAULT_HEARTBEAT_INTERVAL

    def start(self) -> Agent:
        """Heartbeat in a background thread until `stop()`: one at once, then every interval."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        interval = self._resolve_interval()
        self.heartbeat_interval = interval

        def loop() -> None:
            failures = 0
            while not self._stop.is_set():
                try:
                    self.heartbeat()
                    self.last_heartbeat_error = None
                    failures = 0
                except TetherError as exc:
                    failures += 1
                    self.last_heartbeat_error = exc
                    log.warning("heartbeat of %s failed: %s", self.agent_id, exc)
                except Exception:  # noqa: BLE001 — a bug in a callback must not end the heartbeats
                    failures += 1
                    log.exception("heartbeat of %s failed", self.agent_id)
                self._stop.wait(interval if failures == 0 else min(interval, 1.0 * failures))

        self._thread = threading.Thread(target=loop, name=f"tether-heartbeat-{self.agent_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the background heartbeats (what the agent holds stays held)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    def close(self) -> None:
        """Stop heartbeating, release everything held, and close the HTTP session."""
        self.stop()
        try:
            self.release_all()
        finally:
            self.http.close()

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
