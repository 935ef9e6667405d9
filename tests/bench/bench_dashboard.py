"""How long each dashboard page takes to render with a large fleet (not a test: `make bench-dashboard`).

Builds a scratch database (`<DATABASE_URL's name>_dashbench`) with bulk inserts — bulk_create for pools,
agents, profiles and assignments, COPY for the event log and the usage rollups — not through the
services: 10,000 live assignments plus 90,000 ended ones (100,000), 1,000,000 events, and the hourly
rollups those assignments and events make. Then renders every page through Django's test client
(middleware, session, the operator check, the template) and prints the median, p95 and the number of
queries of each. Targets: every page under 200 ms; the analytics endpoints and pages (issue 13) well
under a second. Also times one run of the rollup job. Writes the table to docs/bench-dashboard.md
unless TETHER_BENCH_NO_WRITE is set.
"""

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench._harness import REPO, django_on, scratch_database  # noqa: E402

LIVE = int(os.environ.get("TETHER_BENCH_LIVE", "10000"))
ENDED = int(os.environ.get("TETHER_BENCH_ENDED", "90000"))
EVENTS = int(os.environ.get("TETHER_BENCH_EVENTS", "1000000"))
POOLS, AGENTS_PER_POOL, PROFILES = 20, 50, 30000
RUNS = int(os.environ.get("TETHER_BENCH_RUNS", "15"))
TARGET_MS = 200
ANALYTICS_TARGET_MS = 1000  # /api/analytics/*, /api/assignments/metrics, /analytics/, /metrics


def build() -> dict:
    from django.db import connection
    from django.utils import timezone

    from agents.models import Agent
    from assignments.models import Assignment, Event, Profile
    from config.tokens import token_hash
    from pools.models import AgentPool

    rng = random.Random(42)
    now = timezone.now()
    started = time.perf_counter()
    pools = AgentPool.objects.bulk_create(
        AgentPool(name=f"pool-{i:02d}", platform="kubernetes", strategy="least_connections",
                  enrollment_token_hash=token_hash(f"enr-{i}")) for i in range(POOLS)
    )
    agents = Agent.objects.bulk_create(
        (
            Agent(agent_id=f"agent-{p.name}-{j:03d}", pool=p, capacity=20,
                  status=rng.choices(["active", "busy", "stale", "draining"], [90, 6, 3, 1])[0],
                  load_metrics={"cpu": rng.randint(5, 95), "memory": rng.randint(20, 90)},
                  health_score=round(rng.uniform(0.4, 1.0), 3),
                  last_heartbeat=now - timedelta(seconds=rng.randint(0, 120)),
                  token_hash=token_hash(f"agt-{p.name}-{j}"))
            for p in pools for j in range(AGENTS_PER_POOL)
        ),
        batch_size=2000,
    )
    profiles = Profile.objects.bulk_create(
        (Profile(profile_id=f"octo-{i:06d}", name=f"Profile {i}", fencing_token=3) for i in range(PROFILES)),
        batch_size=5000,
    )
    # Live: one per profile (the partial unique index holds), spread over agents (≤ capacity each).
    live_rows = []
    for i in range(LIVE):
        agent = agents[i % len(agents)]
        status = rng.choices(["active", "idle", "releasing", "pending"], [80, 15, 3, 2])[0]
        t = now - timedelta(seconds=rng.randint(10, 86400))
        live_rows.append(Assignment(
            profile=profiles[i], pool=agent.pool, agent=None if status == "pending" else agent,
            workflow_id=rng.choice(["checkout", "warmup", "sweep", "review"]), status=status,
            assigned_at=t, last_activity=t + timedelta(seconds=rng.randint(0, 600)), fencing_token=3,
        ))
    ended_rows = []
    for i in range(ENDED):
        agent = rng.choice(agents)
        t = now - timedelta(seconds=rng.randint(3600, 30 * 86400))
        ended_rows.append(Assignment(
            profile=profiles[rng.randrange(PROFILES)], pool=agent.pool, agent=agent, workflow_id="checkout",
            status=rng.choice(["released", "released", "expired", "failed"]), assigned_at=t,
            last_activity=t + timedelta(minutes=30), released_at=t + timedelta(minutes=30),
            release_reason="released", fencing_token=rng.randint(1, 3),
        ))
    Assignment.objects.bulk_create(live_rows + ended_rows, batch_size=5000)

    types = ["assignment.created", "assignment.released", "assignment.status_changed", "assignment.reassigned",
             "assignment.conflict", "assignment.expired", "agent.status_changed", "agent.stale"]
    weights = [30, 28, 25, 5, 5, 3, 3, 1]
    span = 30 * 86400
    with connection.cursor() as cursor:
        sql = ("COPY assignments_event (type, occurred_at, actor, assignment_id, profile_id, agent_id, pool, "
               "task_id, from_status, to_status, data) FROM STDIN")
        with cursor.cursor.copy(sql) as copy:
            for k in range(EVENTS):
                # Oldest first, so seq grows with time (as it does in production).
                t = now - timedelta(seconds=span * (1 - (k + 1) / EVENTS))
                agent = agents[rng.randrange(len(agents))]
                copy.write_row((
                    rng.choices(types, weights)[0], t, f"agent:{agent.agent_id}", str(uuid.uuid4()),
                    f"octo-{rng.randrange(PROFILES):06d}", agent.agent_id, agent.pool.name, "",
                    "active", "released", json.dumps({"fencing_token": 3}),
                ))
    rollup_rows = build_rollups(now)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"build_seconds": time.perf_counter() - started, "events": Event.objects.order_by("-seq").first().seq,
            "rollup_rows": rollup_rows}


def build_rollups(now) -> int:
    """The hourly rollups (UsageRollup) these assignments and events make, COPYed in: each assignment
    gives busy time to its profile, agent and pool in every hour it spans (and counts where it began
    and how it ended); conflicts, failovers and expiries come from the event log, grouped by hour in SQL.
    As many rows as the real job would write for this history, without running it 720 times."""
    from collections import defaultdict

    from django.db import connection

    from assignments.models import Assignment

    hour = timedelta(hours=1)
    stats = defaultdict(lambda: defaultdict(float))
    for profile_id, agent_id, pool, status, assigned_at, released_at in (
        Assignment.objects.values_list("profile__profile_id", "agent__agent_id", "pool__name", "status",
                                       "assigned_at", "released_at").iterator(chunk_size=5000)
    ):
        end = min(released_at or now, now)
        at = assigned_at.replace(minute=0, second=0, microsecond=0)
        keys = [("profile", profile_id), ("pool", pool)] + ([("agent", agent_id)] if agent_id else [])
        first = True
        while at < end:
            busy = (min(end, at + hour) - max(assigned_at, at)).total_seconds()
            for scope, key in keys:
                row = stats[(scope, key, at)]
                row["busy_seconds"] += busy if agent_id else 0.0
                row["wait_seconds"] += 0.0 if agent_id else busy
                row["assignments"] += 1 if first else 0
            first = False
            at += hour
        if released_at is not None:
            outcome = {"released": "successes", "failed": "failures", "expired": "expirations"}[status]
            for scope, key in keys:
                stats[(scope, key, released_at.replace(minute=0, second=0, microsecond=0))][outcome] += 1
    with connection.cursor() as cursor:
        for scope, column in (("profile", "profile_id"), ("agent", "agent_id"), ("pool", "pool")):
            cursor.execute(f"""
                SELECT date_trunc('hour', occurred_at), {column}, type, count(*) FROM assignments_event
                WHERE type IN ('assignment.conflict', 'assignment.reassigned') GROUP BY 1, 2, 3""")
            for at, key, type_, n in cursor.fetchall():
                stats[(scope, key, at)]["conflicts" if type_ == "assignment.conflict" else "failovers"] += n
        columns = ["assignments", "busy_seconds", "conflicts", "failures", "expirations", "successes", "failovers",
                   "waits", "wait_seconds", "tasks_enqueued", "tasks_dequeued", "tasks_assigned", "task_wait_seconds",
                   "tasks_completed", "tasks_failed", "tasks_cancelled", "tasks_expired", "task_run_seconds"]
        sql = f"COPY assignments_usagerollup (hour, scope, key, computed_at, {', '.join(columns)}) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            for (scope, key, at), values in stats.items():
                copy.write_row([at, scope, key, now] + [values.get(c, 0) if c.endswith("seconds") else int(values.get(c, 0))
                                                        for c in columns])
    return len(stats)


def time_rollup_job() -> float:
    """One run of the real rollup job (the current hour and TETHER_ROLLUP_HOURS_BACK before it), in ms."""
    from assignments.jobs import usage_rollup_recent
    from config.actors import Actor

    t0 = time.perf_counter()
    usage_rollup_recent(actor=Actor.system("bench"))
    return (time.perf_counter() - t0) * 1000


def measure(urls: list[str]) -> list[dict]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench", is_staff=True)
    client = Client()
    client.force_login(user)
    results = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        queries = []

        def count(execute, sql, params, many, context):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            response = client.get(url)
            if response.streaming:
                b"".join(response.streaming_content)
        times = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            response = client.get(url)
            if response.streaming:
                b"".join(response.streaming_content)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        results.append({
            "url": url, "median": statistics.median(times), "p95": times[max(0, int(len(times) * 0.95) - 1)],
            "min": times[0], "queries": len(queries), "kb": len(body) / 1024,
        })
        print(f"{url:60s} median {results[-1]['median']:7.1f} ms  p95 {results[-1]['p95']:7.1f} ms  "
              f"{results[-1]['queries']:2d} queries  {results[-1]['kb']:6.1f} KiB", flush=True)
    return results


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SHOW server_version")
        pg = c.fetchone()[0]
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM; Python {platform.python_version()}, "
            f"PostgreSQL {pg} (same machine); load average at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}")


def main() -> None:
    name = (os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tether").rsplit("/", 1)[-1]) or "tether"
    reuse = bool(os.environ.get("TETHER_BENCH_REUSE"))  # measure again on the data of the last run
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tether")
    url = base.rsplit("/", 1)[0] + f"/{name}_dashbench" if reuse else scratch_database(f"{name}_dashbench")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
    django_on(url, key_prefix=f"tether-bench-{os.getpid()}")
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
    settings.DEBUG = False
    whereabouts = machine()
    from django.contrib.auth.models import User

    from assignments.models import Event

    if reuse:
        User.objects.filter(username="bench").delete()
        built = {"build_seconds": float(os.environ.get("TETHER_BENCH_BUILT_SECONDS", "0")),
                 "events": Event.objects.order_by("-seq").first().seq}
    else:
        print(f"building: {LIVE} live + {ENDED} ended assignments, {EVENTS} events ...", flush=True)
        built = build()
        print(f"built in {built['build_seconds']:.0f} s", flush=True)

    old_seq = built["events"] // 2
    some = Event.objects.get(seq=old_seq)
    profile, agent, pool = some.profile_id, some.agent_id, some.pool
    when = (some.occurred_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    day = some.occurred_at.strftime("%Y-%m-%d")
    urls = [
        "/",
        "/assignments/",
        "/assignments/?status=all",
        "/assignments/?sort=profile",
        "/assignments/?sort=idlest&page=150",
        f"/assignments/?pool={pool}&status=active",
        "/agents/",
        f"/agents/{agent}/",
        "/pools/",
        "/profiles/",
        "/profiles/?state=held",
        "/profiles/?state=available",
        f"/profiles/{profile}/",
        "/history/",
        "/history/?type=assignment.*",
        "/history/?type=agent.stale",
        f"/history/?profile_id={profile}",
        f"/history/?agent_id={agent}&type=assignment.*",
        f"/history/?pool={pool}",
        f"/history/?since={day}T00:00:00&until={day}T06:00:00",
        f"/history/?before={old_seq}",
        f"/history/?as_of_profile={profile}&as_of={when}",
        f"/history/export.csv?profile_id={profile}",
    ]
    analytics_urls = [
        "/api/assignments/metrics",
        f"/api/assignments/metrics?pool={pool}",
        "/api/analytics/utilization?bucket=hour",
        "/api/analytics/utilization?bucket=hour&window=7d",
        "/api/analytics/utilization?bucket=day",
        f"/api/analytics/utilization?bucket=day&pool={pool}",
        "/api/analytics/contention",
        "/api/analytics/contention?window=30d",
        "/api/analytics/agents",
        "/api/analytics/agents?window=30d",
        "/api/analytics/tasks?bucket=day",
        "/analytics/",
        "/analytics/?range=30d",
        "/alerts/",
        "/analytics/export/agents.csv?range=30d",
        "/metrics",
    ]
    results = measure(urls)
    worst = max(r["median"] for r in results)
    print(f"slowest median: {worst:.1f} ms (target < {TARGET_MS} ms)")
    print(f"analytics ({built.get('rollup_rows', '?')} rollup rows):", flush=True)
    analytics_results = measure(analytics_urls)
    worst_analytics = max(r["median"] for r in analytics_results)
    print(f"slowest analytics median: {worst_analytics:.1f} ms (target < {ANALYTICS_TARGET_MS} ms)")
    rollup_ms = time_rollup_job()
    print(f"one rollup job run: {rollup_ms:.0f} ms")
    if os.environ.get("TETHER_BENCH_NO_WRITE"):
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Dashboard benchmark",
        "",
        f"`make bench-dashboard` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}.",
        "",
        f"Data (bulk-inserted into a scratch database): {POOLS} pools, {POOLS * AGENTS_PER_POOL} agents, "
        f"{PROFILES:,} profiles, **{LIVE:,} live assignments** and {ENDED:,} ended ones, "
        f"**{built['events']:,} events** over 30 days. Built in {built['build_seconds']:.0f} s.",
        "",
        f"Machine: {whereabouts}.",
        "",
        f"Each page is rendered {RUNS} times through Django's test client after one warm-up (middleware, "
        "session, operator check, queries, template; no network). Target: under "
        f"{TARGET_MS} ms per page.",
        "",
        "| page | median ms | p95 ms | queries | KiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        mark = "" if r["median"] < TARGET_MS else " ⚠"
        lines.append(f"| `{r['url']}` | {r['median']:.1f}{mark} | {r['p95']:.1f} | {r['queries']} | {r['kb']:.1f} |")
    lines += ["", f"Slowest median: **{worst:.1f} ms**.", "",
              "## Analytics (issue 13)", "",
              f"The same data with its hourly rollups ({built.get('rollup_rows', 0):,} rows). Target: well under "
              f"{ANALYTICS_TARGET_MS} ms.", "",
              "| request | median ms | p95 ms | queries | KiB |", "|---|---:|---:|---:|---:|"]
    for r in analytics_results:
        mark = "" if r["median"] < ANALYTICS_TARGET_MS else " ⚠"
        lines.append(f"| `{r['url']}` | {r['median']:.1f}{mark} | {r['p95']:.1f} | {r['queries']} | {r['kb']:.1f} |")
    lines += ["", f"Slowest median: **{worst_analytics:.1f} ms**. One run of the rollup job (current hour and "
              f"the hours back it recomputes): {rollup_ms:.0f} ms.", ""]
    (REPO / "docs" / "bench-dashboard.md").write_text("\n".join(lines))
    print("wrote docs/bench-dashboard.md")


if __name__ == "__main__":
    main()
