"""A small demo fleet, made through the services (so it has its full event history)."""

from django.core.management.base import BaseCommand

from agents.services import agent_heartbeat, agent_mark_stale, agent_register
from assignments.services import assignment_create, assignment_release, assignment_update, profile_create
from config.actors import Actor
from pools.models import AgentPool
from pools.services import pool_create

DEMO = Actor.system("demo")

POOLS = [
    ("k8s-prod", {"platform": "kubernetes", "region": "us-east-1", "strategy": "least_connections"}),
    ("docker-eu", {"platform": "docker", "region": "eu-west-1", "strategy": "round_robin"}),
]
AGENTS = [
    ("skyvern-k8s-1", "k8s-prod", 3), ("skyvern-k8s-2", "k8s-prod", 3), ("skyvern-k8s-3", "k8s-prod", 2),
    ("skyvern-eu-1", "docker-eu", 2), ("skyvern-eu-2", "docker-eu", 2),
]


class Command(BaseCommand):
    help = "Load a small demo fleet (pools, agents, profiles, assignments, one failover). Skips if pools exist."

    def handle(self, *args, **options):
        if AgentPool.objects.exists():
            self.stdout.write("Demo data: pools already exist, nothing loaded.")
            return
        pools = {name: pool_create(name=name, actor=DEMO, **fields)[0] for name, fields in POOLS}
        for agent_id, pool, capacity in AGENTS:
            agent_register(pool=pools[pool], agent_id=agent_id, actor=DEMO, capacity=capacity,
                           capabilities=["browser", "octo"], version="1.4.2", region=pools[pool].region)
        for i in range(1, 13):
            pool = "k8s-prod" if i <= 8 else "docker-eu"
            profile_create(profile_id=f"octo-{i:04d}", actor=DEMO, name=f"Octo profile {i}", pool=pools[pool].name,
                           tags=["demo"], region=pools[pool].region)
        takes = [("octo-0001", "skyvern-k8s-1"), ("octo-0002", "skyvern-k8s-1"), ("octo-0003", "skyvern-k8s-2"),
                 ("octo-0004", "skyvern-k8s-3"), ("octo-0009", "skyvern-eu-1"), ("octo-0010", "skyvern-eu-2")]
        taken = [assignment_create(profile_id=p, agent_id=a, actor=Actor.for_agent(a), workflow_id=f"wf-{p}") for p, a in takes]
        assignment_update(assignment_id=taken[2].assignment_id, actor=Actor.for_agent("skyvern-k8s-2"), status="idle")
        assignment_release(assignment_id=taken[5].assignment_id, actor=Actor.for_agent("skyvern-eu-2"))
        for agent_id, _, _ in AGENTS:
            agent_heartbeat(agent_id=agent_id, actor=Actor.for_agent(agent_id), load_metrics={"cpu": 35, "memory": 50})
        agent_mark_stale(agent_id="skyvern-k8s-3", actor=DEMO, reason="demo: missed heartbeats")
        self.stdout.write(self.style.SUCCESS(
            f"Demo data: {len(POOLS)} pools, {len(AGENTS)} agents, 12 profiles, {len(takes)} assignments, one failover."
        ))
