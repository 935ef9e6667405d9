"""`make bench-hub`: the CPU a live event message costs the process's event hub to receive
(dashboard/hub.py), its own read of its channel against channels-redis's `receive`, alternating.

One message is sent to the events group, then read — one at a time, as they arrive live — N times
per round, rounds alternating between the two ways of reading so both see the same machine. Only the
receiving side's CPU is counted (the process's, around the reads). Needs REDIS_URL (the Redis of the
channel layer; its keys are cleaned up: the hub's channel leaves the group at the end). Not a test.

    make bench-hub        BENCH_HUB_N=1000 by default
"""

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("TETHER_KEY_PREFIX", "bench-hub")
if not os.environ.get("REDIS_URL"):
    sys.exit("make bench-hub needs REDIS_URL (the channel layer's Redis)")

import django  # noqa: E402

django.setup()

from channels import DEFAULT_CHANNEL_LAYER  # noqa: E402
from channels.layers import channel_layers  # noqa: E402

from dashboard.hub import EventHub  # noqa: E402
from dashboard.publish import EVENTS_GROUP  # noqa: E402

N = int(os.environ.get("BENCH_HUB_N", "1000"))
# A committed release's batch as the publisher sends it: two events.
MESSAGE = {"type": "events.publish", "events": [
    {"seq": i, "type": "assignment.released", "occurred_at": "2026-11-30T12:00:00Z", "actor": "agent:a",
     "assignment_id": "0" * 36, "profile_id": "p", "agent_id": "a", "pool": "bench", "from_status": "active",
     "to_status": "released", "data": {"fencing_token": 3}} for i in range(2)]}


async def receive_cpu(way: str) -> float:
    """Seconds of CPU per message to receive N messages one at a time `way` ("hub" or "layer")."""
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    sender = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    hub = EventHub(layer)  # not subscribed: nothing else reads its channel
    hub.channel = await layer.new_channel()
    await layer.group_add(EVENTS_GROUP, hub.channel)
    cpu = 0.0
    try:
        for _ in range(N):
            await sender.group_send(EVENTS_GROUP, MESSAGE)
            started = time.process_time()
            if way == "layer":
                await layer.receive(hub.channel)
            else:
                while not await hub._read():
                    pass
            cpu += time.process_time() - started
    finally:
        await layer.group_discard(EVENTS_GROUP, hub.channel)
    return cpu / N


async def main() -> None:
    results = {"layer": [], "hub": []}
    for _ in range(2):
        for way in ("layer", "hub"):
            results[way].append(await receive_cpu(way))
    print(f"CPU to receive one live message ({N} a round, rounds alternating):")
    print(f"  channels-redis receive: {', '.join(f'{s * 1000:.3f}' for s in results['layer'])} ms")
    print(f"  the hub's own read:     {', '.join(f'{s * 1000:.3f}' for s in results['hub'])} ms")


if __name__ == "__main__":
    asyncio.run(main())
