"""A simulated fleet that uses Tether the way real agents do: through the agent SDK
(`tether_client`, client/), over the public HTTP API.

It sets the stage as an operator would (pools with short timeouts and their profiles, made through
the services if missing; each pool's enrollment token is rotated to learn it), then a dozen agents
register with `POST /api/agents/register`, heartbeat (reporting what they hold, dropping what the
reply revokes, picking up what it assigns), take and release profiles, go idle, and now and then one
crashes — stops heartbeating — so the staleness job fails its work over while an operator watches;
later it comes back and learns, in its next heartbeat reply, what it no longer holds.

Takes come in three kinds: a named profile (refused at once when held), any free profile of the
pool by requirements, and — now and then, in a thread of its own so the fleet keeps beating — a
wait of a few seconds for one of the pool's busiest profiles, so queues form and hand-overs show
(sim-beta serves its waiters by priority, sim-alpha rests a released profile for a few seconds).
On release, the agent reports how the profile fared (mostly success, now and then a captcha).

The agents also keep their pools' task queues moving: now and then one submits a task to its pool
(any of the five priorities, mostly normal and low), and each claims what the pool placed on it,
starts it, works it for a few seconds and completes it — or fails it, usually with a retry. A
crashed agent's tasks go back to the queue (a new attempt) and on to another agent.

Expected refusals (409 conflict, at capacity, stale token; 404 for what ended meanwhile) are part
of the game. Anything else — a 5xx, an unexpected 4xx, a connection error (after the SDK's retries of
what is safe to retry) — is an error: it is logged, and the command exits non-zero (with --duration)
if there was any. The simulator drives each agent's heartbeats itself (`Agent.heartbeat()`, no
background thread), so a crash is simply an agent it stops driving.
"""

import logging
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from django.core.management.base import BaseCommand, CommandError
from tether_client import Agent, ApiError, Conflict, Lease, Task, TetherError

from agents.models import Agent as AgentRow
from assignments.models import Profile
from assignments.services import profile_create
from config.actors import Actor
from pools.models import AgentPool
from pools.services import pool_create, pool_update

EXPECTED_REFUSALS = {"conflict", "agent_at_capacity", "agent_unavailable", "stale_fencing_token",
                     "invalid_transition", "not_found", "profile_disabled", "no_profile_available",
                     "profile_cooling_down", "quota_exceeded", "profile_quarantined", "deadlock", "wait_expired"}
# How each simulated pool settles contention (DESIGN.md "Waiting, priority and deadlocks").
POOL_POLICIES = {
    "alpha": {"profile_cooldown_seconds": 3},
    "beta": {"conflict_policy": "priority"},
    "gamma": {},
}
# Submitted priorities: mostly routine work, now and then something urgent.
PRIORITIES = [("urgent", 0.03), ("critical", 0.07), ("high", 0.2), ("normal", 0.45), ("low", 0.25)]
TASK_CAPACITY = 2
LONGEST_WAIT_SECONDS = 8.0  # a simulated wait for a busy profile lasts 3 s to this


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@dataclass
class SimAgent:
    agent_id: str
    pool: str
    capacity: int
    sdk: Agent | None = None
    next_heartbeat: float = 0.0
    next_claim: float = 0.0
    crashed_until: float = 0.0
    # Tasks it is working on, with the moment each is done.
    working: dict = field(default_factory=dict)
    # A waiting take in flight (its own thread), at most one at a time.
    waiting: threading.Thread | None = None

    @property
    def held(self) -> dict:
        """What the SDK holds now (its heartbeats add what failover gave it and drop what was revoked)."""
        return {lease.assignment_id: lease for lease in self.sdk.held} if self.sdk else {}

    @property
    def crashed(self) -> bool:
        return self.crashed_until > 0


class Command(BaseCommand):
    help = "Simulate a fleet of agents against a running Tether, through its public API."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--agents", type=int, default=12)
        parser.add_argument("--pools", type=int, default=3, choices=[1, 2, 3])
        parser.add_argument("--profiles-per-pool", type=int, default=10)
        parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until interrupted")
        parser.add_argument("--tick", type=float, default=0.5, help="seconds between rounds")
        parser.add_argument("--min-rounds", type=int, default=0,
                            help="with --duration: go on past it until this many rounds have run (on a slow or busy "
                                 "machine a round takes longer, and a run of fixed seconds does less)")
        parser.add_argument("--heartbeat-timeout", type=int, default=10, help="the simulated pools' timeout")
        parser.add_argument("--idle-timeout", type=int, default=90, help="the simulated pools' idle timeout")
        parser.add_argument("--crash-every", type=float, default=40, help="average seconds between crashes; 0: never")
        parser.add_argument("--tasks-per-minute", type=float, default=40,
                            help="tasks the agents submit to their pools, in all; 0: none")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--prefix", default="sim", help="prefix of the simulated pools, agents and profiles")
        parser.add_argument("--no-adopt", action="store_true",
                            help="leave other pools' agents (e.g. the demo fleet) alone instead of driving them too")

    def handle(self, *args, **opts):
        self.rng = random.Random(opts["seed"])
        self.opts = opts
        # The SDK's own lines (a revoked assignment, each HTTP request) would drown the simulator's.
        logging.getLogger("tether_client").setLevel(logging.CRITICAL)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.errors = 0
        self.finished = False  # set when the command ends: a waiter still running then stays silent
        self.stats = {"takes": 0, "conflicts": 0, "releases": 0, "idles": 0, "crashes": 0, "revoked": 0, "picked_up": 0,
                      "selected": 0, "waited": 0, "reports": 0, "rounds": 0,
                      "submitted": 0, "completed": 0, "failed": 0}
        self.stats_lock = threading.Lock()
        tokens, profiles = self._set_stage()
        self.profiles = profiles
        self.agents = self._register(tokens)
        if not opts["no_adopt"]:
            self.agents += self._adopt()
        started = time.monotonic()
        self.log(f"{len(self.agents)} agents in {len({a.pool for a in self.agents})} pools are running (Ctrl-C stops them)")
        signal.signal(signal.SIGTERM, _interrupt)  # stopped by `make run`: end the same way as Ctrl-C
        try:
            while (not opts["duration"] or time.monotonic() - started < opts["duration"]
                   or self.stats["rounds"] < opts["min_rounds"]):
                self._round()
                time.sleep(opts["tick"])
        except KeyboardInterrupt:
            pass
        self._let_waits_end()
        self.log(f"done: {self.stats}, errors: {self.errors}")
        self.finished = True
        if self.errors and opts["duration"]:
            raise CommandError(f"{self.errors} unexpected error(s)")

    def log(self, message: str) -> None:
        if self.finished:
            return  # a waiter still running after the command ended: its output may be closed
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
                        "assignment_idle_timeout_seconds": self.opts["idle_timeout"], "task_capacity": TASK_CAPACITY,
                        **POOL_POLICIES[name.rsplit("-", 1)[-1]]}
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
            try:
                agent.sdk = Agent.register(
                    self.opts["url"], enrollment_token=tokens[pool], agent_id=agent.agent_id, pool=pool,
                    capacity=agent.capacity, agent_type="worker", capabilities=["browser", "octo"],
                    version="sim-1.0", load_metrics=self._metrics(),
                    agent_options=self._agent_options(agent),
                )
            except TetherError as exc:
                raise CommandError(f"could not register {agent.agent_id}: {exc}") from None
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
            agents = list(AgentRow.objects.filter(pool=pool).exclude(status=AgentRow.Status.INACTIVE).order_by("agent_id"))
            if not agents:
                continue
            _, token = pool_update(name=pool.name, actor=operator, rotate_enrollment_token=True)
            self.profiles[pool.name] = list(
                Profile.objects.filter(pool=pool, enabled=True).order_by("profile_id").values_list("profile_id", flat=True)
            )
            for existing in agents:
                agent = SimAgent(agent_id=existing.agent_id, pool=pool.name, capacity=existing.capacity)
                try:
                    agent.sdk = Agent.register(
                        self.opts["url"], enrollment_token=token, agent_id=agent.agent_id, pool=pool.name,
                        load_metrics=self._metrics(), agent_options=self._agent_options(agent),
                    )
                except TetherError as exc:
                    raise CommandError(f"could not adopt {agent.agent_id}: {exc}") from None
                agent.next_heartbeat = 0
                adopted.append(agent)
        if adopted:
            self.log(f"also driving {len(adopted)} agents of {', '.join(sorted({a.pool for a in adopted}))}")
        return adopted

    def _agent_options(self, agent: SimAgent) -> dict:
        return {
            "timeout": 15.0,
            "load_metrics": self._metrics,
            "on_revoked": lambda lease: self._revoked(agent, lease),
            "on_assigned": lambda lease: self._picked_up(agent, lease),
        }

    def _metrics(self):
        return {"cpu": round(self.rng.uniform(10, 75), 1), "memory": round(self.rng.uniform(20, 70), 1),
                "active_connections": self.rng.randint(0, 20)}

    def _refused(self, what: str, exc: TetherError, also_expected=()) -> None:
        """An expected refusal is part of the game; anything else is an error (counted, logged)."""
        if isinstance(exc, ApiError) and (exc.status in (404, 409) and exc.code in EXPECTED_REFUSALS
                                          or exc.code in also_expected):
            return
        with self.stats_lock:
            self.errors += 1
        self.log(f"ERROR {what}: {exc}")

    def _round(self):
        now = time.monotonic()
        elapsed, self.last_round = now - getattr(self, "last_round", now), now
        self._maybe_crash(now, elapsed)
        self._maybe_submit(elapsed)
        self._count("rounds")
        for agent in self.agents:
            try:
                self._act(agent, now)
            except (OSError, TetherError) as exc:
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
        self._work(agent, now)
        roll = self.rng.random()
        if roll < 0.10:
            self._take(agent)
        elif roll < 0.15 and agent.held:
            self._release(agent)
        elif roll < 0.17 and agent.held:
            self._idle(agent)

    # --- tasks ------------------------------------------------------------------------------------

    def _maybe_submit(self, elapsed: float):
        """About --tasks-per-minute tasks a minute, each submitted by a live agent to its own pool."""
        rate = self.opts["tasks_per_minute"] / 60.0
        if not rate:
            return
        count = int(rate * elapsed) + (1 if self.rng.random() < (rate * elapsed) % 1 else 0)
        live = [a for a in self.agents if not a.crashed and a.sdk is not None]
        for _ in range(count if live else 0):
            agent = self.rng.choice(live)
            priority = self.rng.choices([p for p, _ in PRIORITIES], weights=[w for _, w in PRIORITIES])[0]
            payload = {"kind": self.rng.choice(["scrape", "sign-in", "checkout", "warm-up"]),
                       "url": f"https://example.com/{self.rng.randint(1, 999)}"}
            try:
                agent.sdk.submit(pool=agent.pool, payload=payload, priority=priority)
            except TetherError as exc:
                self._refused(f"submit by {agent.agent_id}", exc)
            else:
                self._count("submitted")

    def _work(self, agent: SimAgent, now: float):
        """Finish what is done (complete, or now and then fail: mostly with a retry), then claim what
        the pool placed on this agent and start it."""
        for task_id, (task, done_at) in list(agent.working.items()):
            if now < done_at:
                continue
            del agent.working[task_id]
            try:
                roll = self.rng.random()
                if roll < 0.08:
                    task.fail("the page did not load", retry=roll < 0.06)
                    self._count("failed")
                else:
                    task.complete({"ok": True, "items": self.rng.randint(1, 40)})
                    self._count("completed")
            except TetherError as exc:
                # Moved to another agent meanwhile (this one crashed and came back): a stale attempt.
                self._refused(f"finishing task {task_id} by {agent.agent_id}", exc)
        room = TASK_CAPACITY - len(agent.working)
        if room <= 0 or now < agent.next_claim:
            return
        agent.next_claim = now + self.rng.uniform(1.0, 3.0)
        try:
            claimed = agent.sdk.claim(max=room)
        except TetherError as exc:
            self._refused(f"claim by {agent.agent_id}", exc)
            return
        for task in claimed:
            if task.task_id in agent.working:
                continue
            self._start(agent, task, now)

    def _start(self, agent: SimAgent, task: Task, now: float):
        try:
            if task.status != "running":
                task.start()
        except TetherError as exc:
            self._refused(f"start of task {task.task_id} by {agent.agent_id}", exc)
            return
        # A few seconds of work (scaled with the pools' heartbeat timeout: 2 to 8 s by default).
        hb = self.opts["heartbeat_timeout"]
        agent.working[task.task_id] = (task, now + self.rng.uniform(0.2 * hb, 0.8 * hb))

    def _let_waits_end(self):
        """Waits in flight end within their few seconds: keep the fleet beating until they have (a
        fleet that went silent at once would go stale under an operator's eyes). The SDK gives a
        wait its seconds and a grace of 10 more for the server's answer (`tether_client.agent`)."""
        deadline = time.monotonic() + LONGEST_WAIT_SECONDS + 10 + 2
        while time.monotonic() < deadline and any(a.waiting is not None and a.waiting.is_alive() for a in self.agents):
            now = time.monotonic()
            for agent in self.agents:
                if not agent.crashed and now >= agent.next_heartbeat:
                    self._heartbeat(agent)
                    agent.next_heartbeat = now + self.opts["heartbeat_timeout"] / 3
            time.sleep(self.opts["tick"])

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
        self._count("crashes")
        self.log(f"{agent.agent_id} CRASHES (silent for {down:.0f} s; it holds {len(agent.held)})")

    def _heartbeat(self, agent: SimAgent):
        """One heartbeat through the SDK: it reports what the agent holds, drops what the reply
        revokes and picks up what it assigns (`_revoked`, `_picked_up` count and tell)."""
        try:
            agent.sdk.heartbeat()
        except TetherError as exc:
            self._refused(f"heartbeat of {agent.agent_id}", exc)

    def _revoked(self, agent: SimAgent, lease: Lease):
        self._count("revoked")
        self.log(f"{agent.agent_id} drops {lease.assignment_id[:8]} (revoked in its heartbeat reply)")

    def _picked_up(self, agent: SimAgent, lease: Lease):
        self._count("picked_up")
        self.log(f"{agent.agent_id} picks up {lease.assignment_id[:8]} (handed over by the pool)")

    def _count(self, stat: str) -> None:
        with self.stats_lock:
            self.stats[stat] += 1

    def _take(self, agent: SimAgent):
        held = agent.held
        if len(held) >= agent.capacity:
            return
        roll = self.rng.random()
        if roll < 0.3:
            self._select(agent)
        elif roll < 0.45:
            self._wait_for_busy_profile(agent, held)
        else:
            self._take_named(agent, held)

    def _take_named(self, agent: SimAgent, held: dict):
        mine = {lease.profile_id for lease in held.values()}
        # Half the named takes go to the pool's first three profiles: the busy ones people fight over.
        pool_profiles = self.profiles[agent.pool]
        choices = [p for p in (pool_profiles[:3] if self.rng.random() < 0.5 else pool_profiles) if p not in mine]
        if not choices:
            return
        profile_id = self.rng.choice(choices)
        try:
            agent.sdk.profile(profile_id, workflow_id=f"wf-{self.rng.randint(1000, 9999)}")
        except Conflict:
            self._count("conflicts")
        except TetherError as exc:
            if isinstance(exc, ApiError) and exc.status == 409:
                self._count("conflicts")
            self._refused(f"take of {profile_id} by {agent.agent_id}", exc)
        else:
            self._count("takes")

    def _select(self, agent: SimAgent):
        """Any free profile of the pool (the one released longest ago): none free is a 409."""
        try:
            lease = agent.sdk.profile(requirements={"pool": agent.pool}, workflow_id=f"wf-{self.rng.randint(1000, 9999)}")
        except Conflict:
            self._count("conflicts")
        except TetherError as exc:
            self._refused(f"selection by {agent.agent_id}", exc)
        else:
            self._count("selected")
            self.log(f"{agent.agent_id} selects {lease.profile_id} by requirements")

    def _wait_for_busy_profile(self, agent: SimAgent, held: dict):
        """Wait a few seconds for one of the pool's first three profiles (the busy ones), in a
        thread: the SDK polls until the request is served or the wait ends."""
        if agent.waiting is not None and agent.waiting.is_alive():
            return
        mine = {lease.profile_id for lease in held.values()}
        choices = [p for p in self.profiles[agent.pool][:3] if p not in mine]
        if not choices:
            return
        profile_id = self.rng.choice(choices)
        wait = self.rng.uniform(3.0, LONGEST_WAIT_SECONDS)
        priority = self.rng.randint(0, 5)

        def run():
            try:
                agent.sdk.profile(profile_id, wait=round(wait, 1), priority=priority,
                                  workflow_id=f"wf-{self.rng.randint(1000, 9999)}")
            except TetherError as exc:
                self._refused(f"wait for {profile_id} by {agent.agent_id}", exc)
            else:
                self._count("waited")
                self.log(f"{agent.agent_id} gets {profile_id} after waiting (priority {priority})")

        agent.waiting = threading.Thread(target=run, name=f"wait-{agent.agent_id}", daemon=True)
        agent.waiting.start()

    def _release(self, agent: SimAgent):
        lease = self.rng.choice(list(agent.held.values()))
        self._report(agent, lease)
        try:
            # Fenced: if it moved to another agent since this one last heard (a late heartbeat), the
            # SDK finds it is no longer ours and lets it go without touching the new holder's.
            lease.release()
        except TetherError as exc:
            self._refused(f"release of {lease.assignment_id} by {agent.agent_id}", exc, also_expected=("forbidden",))
        else:
            self._count("releases")

    def _report(self, agent: SimAgent, lease: Lease):
        """How the profile fared: mostly fine, sometimes a captcha or a failure."""
        outcome = self.rng.choices(["success", "failure", "captcha"], weights=[0.88, 0.05, 0.07])[0]
        try:
            lease.report(outcome)
        except TetherError as exc:
            self._refused(f"report on {lease.profile_id} by {agent.agent_id}", exc, also_expected=("forbidden",))
        else:
            self._count("reports")

    def _idle(self, agent: SimAgent):
        lease = self.rng.choice(list(agent.held.values()))
        try:
            lease.idle()
        except TetherError as exc:
            self._refused(f"idle of {lease.assignment_id} by {agent.agent_id}", exc, also_expected=("forbidden",))
        else:
            self._count("idles")
