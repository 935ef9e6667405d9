"""A simulated fleet that uses Tether the way real agents do: through the public HTTP API.

It sets the stage as an operator would (pools with short timeouts and their profiles, made through
the services if missing; each pool's enrollment token is rotated to learn it), then a dozen agents
register with `POST /api/agents/register`, heartbeat (reporting what they hold, dropping what the
reply revokes, picking up what it assigns), take and release profiles, go idle, and now and then one
crashes — stops heartbeating — so the staleness job fails its work over while an operator watches;
later it comes back and learns, in its next heartbeat reply, what it no longer holds.

Expected refusals (409 conflict, at capacity, stale token; 404 for what ended meanwhile) are part
of the game. Anything else — a 5xx, an unexpected 4xx, a connection error — is an error: it is
logged, and the command exits non-zero (with --duration) if there was any.
"""

import http.client
import json
import random
import signal
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from assignments.models import Profile
from assignments.services import profile_create
from config.actors import Actor
from pools.models import AgentPool
from pools.services import pool_create, pool_update

EXPECTED_REFUSALS = {"conflict", "agent_at_capacity", "agent_unavailable", "stale_fencing_token",
                     "invalid_transition", "not_found", "profile_disabled"}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@dataclass
class SimAgent:
    agent_id: str
    pool: str
    capacity: int
    token: str = ""
    held: dict = field(default_factory=dict)  # assignment_id → profile_id
    next_heartbeat: float = 0.0
    crashed_until: float = 0.0

    @property
    def crashed(self) -> bool:
        return self.crashed_until > 0


class Api:
    """A tiny JSON client on one kept-alive connection (reopened when the server drops it)."""

    def __init__(self, url: str, timeout: float):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.conn = None

    def call(self, method: str, path: str, body=None, token: str = "", headers=None) -> tuple[int, dict]:
        payload = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if payload is not None:
            hdrs["Content-Type"] = "application/json"
        if token:
            hdrs["Authorization"] = f"Token {token}"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=payload, headers=hdrs)
                response = self.conn.getresponse()
                raw = response.read()
                return response.status, (json.loads(raw) if raw else {})
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class Command(BaseCommand):
    help = "Simulate a fleet of agents against a running Tether, through its public API."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--agents", type=int, default=12)
        parser.add_argument("--pools", type=int, default=3, choices=[1, 2, 3])
        parser.add_argument("--profiles-per-pool", type=int, default=10)
        parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until interrupted")
        parser.add_argument("--tick", type=float, default=0.5, help="seconds between rounds")
        parser.add_argument("--heartbeat-timeout", type=int, default=10, help="the simulated pools' timeout")
        parser.add_argument("--idle-timeout", type=int, default=90, help="the simulated pools' idle timeout")
        parser.add_argument("--crash-every", type=float, default=40, help="average seconds between crashes; 0: never")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--prefix", default="sim", help="prefix of the simulated pools, agents and profiles")
        parser.add_argument("--no-adopt", action="store_true",
                            help="leave other pools' agents (e.g. the demo fleet) alone instead of driving them too")

    def handle(self, *args, **opts):
        self.rng = random.Random(opts["seed"])
        self.opts = opts
        self.api = Api(opts["url"], timeout=15)
        self.errors = 0
        self.stats = {"takes": 0, "conflicts": 0, "releases": 0, "idles": 0, "crashes": 0, "revoked": 0, "picked_up": 0}
        tokens, profiles = self._set_stage()
        self.profiles = profiles
        self.agents = self._register(tokens)
        if not opts["no_adopt"]:
            self.agents += self._adopt()
        started = time.monotonic()
        self.log(f"{len(self.agents)} agents in {len({a.pool for a in self.agents})} pools are running (Ctrl-C stops them)")
        signal.signal(signal.SIGTERM, _interrupt)  # stopped by `make run`: end the same way as Ctrl-C
        try:
            while not opts["duration"] or time.monotonic() - started < opts["duration"]:
                self._round()
                time.sleep(opts["tick"])
        except KeyboardInterrupt:
            pass
        self.log(f"done: {self.stats}, errors: {self.errors}")
        if self.errors and opts["duration"]:
            raise CommandError(f"{self.errors} unexpected error(s)")

    def log(self, message: str) -> None:
        self.stdout.write(f"[simulator] {message}")
        self.stdout.flush()

    # --- the stage (as an operator would set it, through the services) --------------------------

    def _set_stage(self):
        operator = Actor.system("simulator")
        names = [f"{self.opts['prefix']}-{n}" for n in ("alpha", "beta", "gamma")[: self.opts["pools"]]]
        strategies = ["least_connections", "round_robin", "resource_based"]
        tokens, profiles = {}, {}
        for i, name in enumerate(names):
            timeouts = {"heartbeat_timeout_seconds": self.opts["heartbeat_timeout"],
                        "assignment_idle_timeout_seconds": self.opts["idle_timeout"]}
            if AgentPool.objects.filter(name=name).exists():
                _, tokens[name] = pool_update(name=name, actor=operator, rotate_enrollment_token=True, **timeouts)
            else:
                _, tokens[name] = pool_create(name=name, actor=operator, platform="docker", strategy=strategies[i],
                                              region=f"region-{i + 1}", **timeouts)
            profiles[name] = []
            for n in range(1, self.opts["profiles_per_pool"] + 1):
                profile_id = f"{name}-profile-{n:02d}"
                if not Profile.objects.filter(profile_id=profile_id).exists():
                    profile_create(profile_id=profile_id, actor=operator, name=f"{name} profile {n}", pool=name)
                profiles[name].append(profile_id)
        return tokens, profiles

    # --- the agents (through the public API only) -----------------------------------------------

    def _register(self, tokens):
        pools = list(tokens)
        agents = []
        for i in range(self.opts["agents"]):
            pool = pools[i % len(pools)]
            agent = SimAgent(agent_id=f"{pool}-agent-{i // len(pools) + 1:02d}", pool=pool, capacity=self.rng.choice([2, 3]))
            status, body = self.api.call(
                "POST", "/api/agents/register",
                {"agent_id": agent.agent_id, "pool": pool, "capacity": agent.capacity, "agent_type": "worker",
                 "capabilities": ["browser", "octo"], "version": "sim-1.0", "load_metrics": self._metrics()},
                headers={"X-Enrollment-Token": tokens[pool]},
            )
            if status != 201:
                raise CommandError(f"could not register {agent.agent_id}: {status} {body}")
            agent.token = body["token"]
            # It may hold assignments from an earlier run: learn them at the first heartbeat.
            agent.next_heartbeat = 0
            agents.append(agent)
        return agents

    def _adopt(self):
        """Drive the agents of every other pool too (the demo fleet of `load_demo`), so that they do
        not all go stale the moment the system starts: as an operator would, learn each pool's
        enrollment token by rotating it, then register its agents again through the API — a new
        incarnation, so what they held fails over and comes back through heartbeats."""

        operator = Actor.system("simulator")
        adopted = []
        others = AgentPool.objects.exclude(name__startswith=f"{self.opts['prefix']}-").order_by("name")
        for pool in others:
            agents = list(Agent.objects.filter(pool=pool).exclude(status=Agent.Status.INACTIVE).order_by("agent_id"))
            if not agents:
                continue
            _, token = pool_update(name=pool.name, actor=operator, rotate_enrollment_token=True)
            self.profiles[pool.name] = list(
                Profile.objects.filter(pool=pool, enabled=True).order_by("profile_id").values_list("profile_id", flat=True)
            )
            for existing in agents:
                agent = SimAgent(agent_id=existing.agent_id, pool=pool.name, capacity=existing.capacity)
                status, body = self.api.call(
                    "POST", "/api/agents/register",
                    {"agent_id": agent.agent_id, "pool": pool.name, "load_metrics": self._metrics()},
                    headers={"X-Enrollment-Token": token},
                )
                if status != 201:
                    raise CommandError(f"could not adopt {agent.agent_id}: {status} {body}")
                agent.token = body["token"]
                agent.next_heartbeat = 0
                adopted.append(agent)
        if adopted:
            self.log(f"also driving {len(adopted)} agents of {', '.join(sorted({a.pool for a in adopted}))}")
        return adopted

    def _metrics(self):
        return {"cpu": round(self.rng.uniform(10, 75), 1), "memory": round(self.rng.uniform(20, 70), 1),
                "active_connections": self.rng.randint(0, 20)}

    def _expect(self, what, status, body, ok=(200, 201), also_expected=()) -> bool:
        """True when it worked; False for an expected refusal; an error (counted) for anything else."""
        if status in ok:
            return True
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        if status in (404, 409) and code in EXPECTED_REFUSALS or code in also_expected:
            return False
        self.errors += 1
        self.log(f"ERROR {what}: {status} {body}")
        return False

    def _round(self):
        now = time.monotonic()
        elapsed, self.last_round = now - getattr(self, "last_round", now), now
        self._maybe_crash(now, elapsed)
        for agent in self.agents:
            try:
                self._act(agent, now)
            except (OSError, http.client.HTTPException) as exc:
                self.errors += 1
                self.log(f"ERROR {agent.agent_id}: {type(exc).__name__}: {exc}")

    def _act(self, agent: SimAgent, now: float):
        if agent.crashed:
            if now < agent.crashed_until:
                return  # crashed: silent, no heartbeats
            agent.crashed_until = 0
            self.log(f"{agent.agent_id} is back after its crash and heartbeats again")
            agent.next_heartbeat = 0
        if now >= agent.next_heartbeat:
            self._heartbeat(agent)
            agent.next_heartbeat = now + self.opts["heartbeat_timeout"] / 3
        roll = self.rng.random()
        if roll < 0.10:
            self._take(agent)
        elif roll < 0.15 and agent.held:
            self._release(agent)
        elif roll < 0.17 and agent.held:
            self._idle(agent)

    def _maybe_crash(self, now: float, elapsed: float):
        """About once every --crash-every seconds (whatever the round's length), an agent whose pool
        has no other crashed agent goes silent for 1.6 to 3 heartbeat timeouts."""
        crash_every = self.opts["crash_every"]
        if not crash_every or self.rng.random() >= elapsed / crash_every:
            return
        down_pools = {a.pool for a in self.agents if a.crashed}
        candidates = [a for a in self.agents if a.pool not in down_pools]
        if not candidates:
            return
        agent = self.rng.choice(candidates)
        down = self.opts["heartbeat_timeout"] * self.rng.uniform(1.6, 3.0)
        agent.crashed_until = now + down
        self.stats["crashes"] += 1
        self.log(f"{agent.agent_id} CRASHES (silent for {down:.0f} s; it holds {len(agent.held)})")

    def _heartbeat(self, agent: SimAgent):
        status, body = self.api.call(
            "POST", f"/api/agents/{agent.agent_id}/heartbeat",
            {"load_metrics": self._metrics(), "assignments": list(agent.held)}, token=agent.token,
        )
        if not self._expect(f"heartbeat of {agent.agent_id}", status, body):
            return
        for assignment_id in body.get("revoked", []):
            agent.held.pop(assignment_id, None)
            self.stats["revoked"] += 1
            self.log(f"{agent.agent_id} drops {assignment_id[:8]} (revoked in its heartbeat reply)")
        for assignment_id in body.get("assigned", []):
            if assignment_id not in agent.held:
                agent.held[assignment_id] = "?"
                self.stats["picked_up"] += 1
                self.log(f"{agent.agent_id} picks up {assignment_id[:8]} (handed over by the pool)")

    def _take(self, agent: SimAgent):
        if len(agent.held) >= agent.capacity:
            return
        mine = set(agent.held.values())
        choices = [p for p in self.profiles[agent.pool] if p not in mine]
        if not choices:
            return
        profile_id = self.rng.choice(choices)
        status, body = self.api.call(
            "POST", "/api/assignments",
            {"profile_id": profile_id, "agent_id": agent.agent_id, "workflow_id": f"wf-{self.rng.randint(1000, 9999)}"},
            token=agent.token,
        )
        if self._expect(f"take of {profile_id} by {agent.agent_id}", status, body, ok=(201,)):
            agent.held[body["assignment_id"]] = profile_id
            self.stats["takes"] += 1
        elif status == 409:
            self.stats["conflicts"] += 1

    def _release(self, agent: SimAgent):
        assignment_id = self.rng.choice(list(agent.held))
        status, body = self.api.call("DELETE", f"/api/assignments/{assignment_id}", token=agent.token)
        agent.held.pop(assignment_id, None)
        # Forbidden: it moved to another agent since this one last heard (a late heartbeat).
        if self._expect(f"release of {assignment_id} by {agent.agent_id}", status, body, also_expected=("forbidden",)):
            self.stats["releases"] += 1

    def _idle(self, agent: SimAgent):
        assignment_id = self.rng.choice(list(agent.held))
        status, body = self.api.call("PATCH", f"/api/assignments/{assignment_id}", {"status": "idle"}, token=agent.token)
        if self._expect(f"idle of {assignment_id} by {agent.agent_id}", status, body, also_expected=("forbidden",)):
            self.stats["idles"] += 1
