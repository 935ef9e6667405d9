"""Screenshots of the dashboard with demo-like data, for the README and docs (headless Chromium).

    make screenshot-dashboard        # writes docs/overview.png and docs/overview-phone.png

Builds a scratch database (`<DATABASE_URL's name>_shot`) with `manage.py load_demo`, then more of the
same through the services — a third pool, agents with load, profiles, live and ended assignments,
refused takes, a stale agent — serves it with daphne on TETHER_SHOT_PORT (8251) and photographs the
overview on a laptop and a phone viewport.
"""

import os
import random
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench._harness import REPO, Server, django_on, scratch_database  # noqa: E402

PORT = int(os.environ.get("TETHER_SHOT_PORT", "8251"))
CHROMIUM = os.environ.get("TETHER_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def demo_data(password: str) -> None:
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from agents.services import agent_heartbeat, agent_mark_stale, agent_register
    from assignments.alerts import alert_raise
    from assignments.services import (
        assignment_create,
        assignment_release,
        assignment_update,
        profile_create,
    )
    from config.actors import OPERATORS_GROUP, Actor
    from config.errors import TetherError
    from pools.models import AgentPool
    from pools.services import pool_create

    call_command("load_demo")
    rng = random.Random(7)
    ops = Actor.system("demo")
    pools = [
        ("k8s-prod", {"platform": "kubernetes", "region": "eu-west-1", "strategy": "least_connections"}, 6),
        ("docker-eu", {"platform": "docker", "region": "eu-central-1", "strategy": "round_robin"}, 4),
        ("bare-us", {"platform": "bare", "region": "us-east-1", "strategy": "resource_based"}, 3),
    ]
    agents = []
    for name, fields, n in pools:
        pool = AgentPool.objects.filter(name=name).first() or pool_create(name=name, actor=ops, **fields)[0]
        for i in range(n):
            agent_id = f"{name.split('-')[0]}-worker-{i + 1:02d}"
            agent_register(pool=pool, agent_id=agent_id, actor=ops, capacity=rng.choice([4, 6, 8]),
                           version="2.4.1", region=fields["region"], capabilities=["chromium", "octo"])
            agent_heartbeat(agent_id=agent_id, actor=Actor.for_agent(agent_id),
                            load_metrics={"cpu": rng.randint(12, 88), "memory": rng.randint(30, 80),
                                          "active_connections": rng.randint(0, 30)})
            agents.append(agent_id)
    for i in range(90):
        profile_create(profile_id=f"octo-{1000 + i}", actor=ops, name=f"Shop account {i + 1}",
                       tags=[rng.choice(["retail", "ads", "social"])])
    user_op = Actor("user", "alice", is_operator=True)
    held = []
    for i in range(62):
        agent_id = agents[i % len(agents)]
        try:
            a = assignment_create(profile_id=f"octo-{1000 + i}", agent_id=agent_id, actor=Actor.for_agent(agent_id),
                                  workflow_id=rng.choice(["checkout-flow", "warmup", "inbox-sweep", "ad-review"]))
            held.append(a)
        except TetherError:
            pass
    for a in held[:14]:  # some finish
        assignment_release(assignment_id=a.assignment_id, actor=Actor.for_agent(a.agent.agent_id))
    for a in held[14:22]:
        assignment_update(assignment_id=a.assignment_id, actor=Actor.for_agent(a.agent.agent_id), status="idle")
    for a in held[22:24]:
        assignment_release(assignment_id=a.assignment_id, actor=user_op)  # → releasing
    for i in range(4):  # refused takes: the profile is held
        a = held[30 + i]
        other = next(x for x in agents if x != a.agent.agent_id and x.split("-")[0] == a.agent.agent_id.split("-")[0])
        try:
            assignment_create(profile_id=a.profile.profile_id, agent_id=other, actor=Actor.for_agent(other))
        except TetherError:
            pass
    agent_mark_stale(agent_id="bare-worker-03", actor=Actor.system("stale-agents"))
    alert_raise(kind="conflict_burst", actor=ops, severity="warning",
                message="octo-1031 refused 6 times in a minute", dedup_key="conflict_burst:octo-1031",
                profile_id="octo-1031", pool="k8s-prod")
    for i in range(6):  # recent activity for the feed
        agent_id = agents[i]
        try:
            assignment_create(profile_id=f"octo-{1070 + i}", agent_id=agent_id, actor=Actor.for_agent(agent_id),
                              workflow_id="checkout-flow")
        except TetherError:
            pass
    user = User.objects.create_user("alice", password=password)
    user.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])


def main() -> None:
    from playwright.sync_api import sync_playwright

    base_name = (os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tether").rsplit("/", 1)[-1]) or "tether"
    url = scratch_database(f"{base_name}_shot")
    env = django_on(url, key_prefix=f"tether-shot-{os.getpid()}")
    password = secrets.token_urlsafe(16)
    demo_data(password)
    server = Server(env, PORT)
    out = Path(os.environ.get("TETHER_SHOT_DIR", REPO / "docs"))
    out.mkdir(parents=True, exist_ok=True)
    pages = [p for p in os.environ.get("TETHER_SHOT_PAGES", "/").split(",") if p]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            for label, viewport, scale in (("", {"width": 1440, "height": 900}, 1), ("-phone", {"width": 390, "height": 844}, 2)):
                context = browser.new_context(viewport=viewport, device_scale_factor=scale)
                page = context.new_page()
                page.goto(f"{server.url}/accounts/login/?next=/")
                page.fill("input[name=username]", "alice")
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_url(f"{server.url}/")
                for path in pages:
                    page.goto(server.url + path)
                    page.wait_for_selector("#live-state[data-state=on]", timeout=5000)
                    page.wait_for_timeout(300)
                    name = "overview" if path == "/" else path.strip("/").replace("/", "-")
                    target = out / f"{name}{label}.png"
                    page.screenshot(path=str(target), full_page=not label)
                    print("wrote", target)
                context.close()
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
