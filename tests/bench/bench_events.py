"""make bench-events: N WebSocket subscribers while changes are made at R per second.

    DATABASE_URL=postgres://… REDIS_URL=redis://… python tests/bench/bench_events.py
        [--subscribers 50] [--rate 200] [--seconds 10] [--writers 8] [--instances 1] [--server daphne|uvicorn] [--port 8160]

What it does, on loopback only, and bounded (it stops by itself):
1. migrates the database named by DATABASE_URL and adds a pool `bench-<random>` with agents and
   profiles (left behind afterwards: use a scratch database);
2. starts `--instances` daphne processes (ports --port, --port+1, …) serving config.asgi;
3. connects `--subscribers` WebSocket clients (API token), spread over the instances, each watching
   that pool from "now";
4. runs `--writers` writer processes that make changes through the services (take / release a
   profile, one event each) at `--rate` changes per second in all, for `--seconds`;
5. prints p50 / p99 / max delay from commit (the writer's after-commit publish hook fires) to
   receipt, and whether every subscriber got every event exactly once and in order.

Exit status 0 when every subscriber got every event, 1 otherwise.
"""

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.net import wait_for_port  # noqa: E402


def _django(settings="config.settings"):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings)
    import django

    django.setup()


# --- writer process -------------------------------------------------------------------------------


def writer_main(args) -> None:
    """Changes through the services at `rate`/s from `start_at` for `seconds`; records when each
    commit's events were handed to the publisher (right after COMMIT) and their seqs."""
    _django()
    from collections import deque

    import dashboard.publish
    from assignments.services import assignment_create, assignment_release
    from config.actors import Actor

    commits = []
    real_publish = dashboard.publish.publish_events

    publish_seconds = []

    def timed_publish(payloads):
        at = time.time()
        commits.append((at, [p["seq"] for p in payloads]))
        real_publish(payloads)
        publish_seconds.append(time.time() - at)

    dashboard.publish.publish_events = timed_publish
    actor = Actor.system("bench")
    profiles = [f"{args.pool}-w{args.index}-p{i}" for i in range(args.profiles)]
    agents = [f"{args.pool}-agent-{i}" for i in range(args.agents)]
    held: deque = deque()
    free = deque(profiles)
    interval = 1.0 / args.rate
    n = int(args.rate * args.seconds)
    while time.time() < args.start_at:
        time.sleep(0.001)
    start = time.time()
    behind = 0
    for i in range(n):
        due = start + i * interval
        now = time.time()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.05:
            behind += 1
        if free and (len(held) < len(profiles) // 2 or i % 2 == 0):
            profile_id = free.popleft()
            a = assignment_create(profile_id=profile_id, agent_id=agents[i % len(agents)], actor=actor)
            held.append((a.assignment_id, profile_id))
        else:
            assignment_id, profile_id = held.popleft()
            assignment_release(assignment_id=assignment_id, actor=actor)
            free.append(profile_id)
    took = time.time() - start
    Path(args.out).write_text(json.dumps({"commits": commits, "seconds": took, "behind": behind,
                                          "publish_ms": [round(x * 1000, 2) for x in publish_seconds]}))


# --- the bench ------------------------------------------------------------------------------------


def _setup(pool_name: str, writers: int, agents: int, profiles: int) -> str:
    _django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from agents.models import Agent
    from assignments.models import Profile
    from pools.models import AgentPool

    call_command("migrate", verbosity=0, interactive=False)
    pool = AgentPool.objects.create(name=pool_name)
    Agent.objects.bulk_create(
        Agent(agent_id=f"{pool_name}-agent-{i}", pool=pool, capacity=10_000, health_score=1.0) for i in range(agents)
    )
    Profile.objects.bulk_create(
        Profile(profile_id=f"{pool_name}-w{w}-p{i}", pool=pool) for w in range(writers) for i in range(profiles)
    )
    user = get_user_model().objects.create_user(username=f"{pool_name}-viewer", password=None)
    return Token.objects.create(user=user).key


async def _subscribe(url: str, received: list, ready: asyncio.Event, stop: asyncio.Event, resyncs: list) -> None:
    """A well-behaved client: on `resync` (or a dropped connection) it reconnects with its last seq."""
    import websockets

    since = None
    while not stop.is_set():
        try:
            async with websockets.connect(url + (f"&since={since}" if since is not None else ""), max_queue=None) as ws:
                ready.set()
                async for message in ws:  # cancelled by the bench when it is done
                    at = time.time()
                    if message.startswith('{"type": "resync"'):
                        since = json.loads(message)["since"]
                        resyncs.append(since)
                        break
                    # '{"seq": N, …': the seq without parsing the whole message (the client must stay cheap).
                    seq = int(message[8 : message.index(",")])
                    received.append((seq, at))
                    since = seq
        except (OSError, websockets.ConnectionClosed):
            resyncs.append(since)
            await asyncio.sleep(0.1)


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


async def bench(args, pool_name: str, token: str) -> int:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings")
    ports = [args.port + i for i in range(args.instances)]
    servers = []
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    try:
        for port in ports:
            log = open(tmp / f"daphne-{port}.log", "wb")
            if args.server == "uvicorn":
                command = ["-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                           "--ws", "websockets", "--lifespan", "off", "--log-level", "warning", "--no-access-log"]
            else:
                command = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
            servers.append(subprocess.Popen(
                [sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            ))
        for port, server in zip(ports, servers):
            wait_for_port(port, server)

        stop = asyncio.Event()
        received = [[] for _ in range(args.subscribers)]
        readies = [asyncio.Event() for _ in range(args.subscribers)]
        resyncs: list = []
        tasks = [
            asyncio.create_task(_subscribe(
                f"ws://127.0.0.1:{ports[i % len(ports)]}/assignments/events?pool={pool_name}&token={token}",
                received[i], readies[i], stop, resyncs,
            ))
            for i in range(args.subscribers)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)

        start_at = time.time() + 1.0
        outs = [tmp / f"writer-{w}.json" for w in range(args.writers)]
        writers = [
            subprocess.Popen(
                [sys.executable, __file__, "--writer", "--index", str(w), "--pool", pool_name,
                 "--rate", str(args.rate / args.writers), "--seconds", str(args.seconds),
                 "--start-at", str(start_at), "--out", str(outs[w]), "--agents", "8", "--profiles", "400"],
                cwd=ROOT, env=env,
            )
            for w in range(args.writers)
        ]
        for w in writers:
            await asyncio.get_running_loop().run_in_executor(None, w.wait, args.seconds + 120)
            if w.returncode != 0:
                raise SystemExit(f"a writer failed ({w.returncode})")
        results = [json.loads(o.read_text()) for o in outs]
        committed = {}
        for r in results:
            for at, seqs in r["commits"]:
                for s in seqs:
                    committed[s] = at
        expected = sorted(committed)
        # Let the last events arrive (bounded).
        deadline = time.time() + 10
        while time.time() < deadline and any(len(r) < len(expected) for r in received):
            await asyncio.sleep(0.05)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()

    complete = in_order = 0
    delays = []
    for r in received:
        seqs = [s for s, _ in r]
        complete += seqs == expected
        in_order += seqs == sorted(set(seqs))
        delays += [(at - committed[s]) * 1000 for s, at in r if s in committed]
    changes = len(expected)
    wall = max(r["seconds"] for r in results)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(f"web instances: {len(ports)} ({args.server}), subscribers: {args.subscribers}, writers: {args.writers}")
    print(f"changes: {changes} in {wall:.1f} s = {changes / wall:.0f}/s (asked {args.rate}/s; "
          f"{sum(r['behind'] for r in results)} changes started >50 ms late)")
    publish_ms = [x for r in results for x in r["publish_ms"]]
    if publish_ms:
        print(f"publish (group_send) time in the writers: p50 {_percentile(publish_ms, 0.5):.1f} ms, "
              f"p99 {_percentile(publish_ms, 0.99):.1f} ms")
    print(f"deliveries: {len(delays)} of {changes * args.subscribers} expected; "
          f"resyncs/reconnects: {len(resyncs)}")
    if delays:
        print(f"commit→receipt delay: p50 {_percentile(delays, 0.5):.1f} ms, p99 {_percentile(delays, 0.99):.1f} ms, "
              f"max {max(delays):.1f} ms, mean {statistics.fmean(delays):.1f} ms")
    ok = complete == args.subscribers
    print(f"every subscriber got every event exactly once, in order: {'yes' if ok else 'NO'} "
          f"({complete}/{args.subscribers} complete, {in_order}/{args.subscribers} in order without duplicates)")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8160")))
    # writer mode (internal)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--agents", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--profiles", type=int, default=400, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (os.environ.get("DATABASE_URL", "").startswith("postgres") and os.environ.get("REDIS_URL")):
        raise SystemExit("bench-events needs DATABASE_URL (PostgreSQL) and REDIS_URL: use a scratch database")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # children inherit it
    # Its own Redis key prefix: group members left by an earlier run cannot slow this one down.
    os.environ.setdefault("TETHER_KEY_PREFIX", f"tether-bench-{secrets.token_hex(3)}")
    os.environ.setdefault("TETHER_LOG_LEVEL", "WARNING")
    if args.writer:
        writer_main(args)
        return
    pool_name = f"bench-{secrets.token_hex(3)}"
    token = _setup(pool_name, args.writers, agents=8, profiles=400)
    sys.exit(asyncio.run(bench(args, pool_name, token)))


if __name__ == "__main__":
    main()
