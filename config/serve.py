"""`make serve`: uvicorn in N worker processes, each listening on the port with a socket of its own.

uvicorn's `--workers` shares one listening socket between its workers, and each worker's event loop
accepts as many waiting connections as it can when it wakes: a burst of connections (a fleet
reconnecting after a restart, a load generator starting) lands mostly on whichever worker woke
first. Keep-alive agents then stay where they landed, and one GIL-bound process does the work of
all: in `make bench`'s contention phase one worker ran at 67% of a CPU and the other at 7%.

Here each worker binds its own socket with SO_REUSEPORT on the same address, so the kernel spreads
new connections over the workers by hash, evenly whatever their timing. The parent only supervises:
it forwards SIGTERM/SIGINT (each worker shuts down gracefully, as uvicorn does), restarts a worker
that died on its own, and gives up — exit status 1 — when workers keep dying at start (the port
taken by another program, a broken configuration). Each worker is `uvicorn.Server` with the
options `make serve` always used: uvloop, httptools, no access log, `config.asgi:application`.

    python -m config.serve --host 0.0.0.0 --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time

log = logging.getLogger("tether.serve")

APPLICATION = "config.asgi:application"
# A worker that dies sooner than this after its start counts as failing to start.
_START_SECONDS = 10.0
_GIVE_UP_AFTER = 3  # failed starts in a row


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, listening: one per worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def tune_garbage_collector() -> int:
    """Load what every request needs (the URLconf and the views it imports), collect, then move
    every object alive now into the permanent generation, which the cyclic garbage collector never
    walks again (`gc.freeze`), and raise its first threshold to TETHER_GC_THRESHOLD. Returns how
    many objects were frozen.

    Why: a request's objects are cyclic garbage when it ends (a serializer and its bound fields point
    at each other, as do DRF's request, view and response), and with 32 requests in flight nearly all
    of them outlive the young generation's passes (one every 700 new objects by default), so the
    collector's full pass ran every few seconds under load, walking the whole startup heap (~150,000
    objects) with the GIL held: `make bench` logged 31 such passes of 60–420 ms in a worker — every
    thread of it, its event loop included, stopped for that long. Frozen, the same passes took 27–45
    ms; with the threshold at 5,000 as well, 16 threads taking and releasing in process spent 0.09 ms
    a request in the collector instead of 0.15–0.18, in passes of a few ms. What is frozen lives as
    long as the process anyway: modules, settings, the URLconf."""
    import gc

    from django.conf import settings
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 — imports every view module now, not on the first request
    gc.collect()
    gc.freeze()
    gc.set_threshold(settings.TETHER_GC_THRESHOLD, *gc.get_threshold()[1:])
    return gc.get_freeze_count()


def _worker(host: str, port: int) -> None:
    import uvicorn

    sock = listening_socket(host, port)
    config = uvicorn.Config(APPLICATION, host=host, port=port, loop="uvloop", http="httptools", access_log=False)
    config.load()  # imports the application (Django set up, every app loaded) before the freeze
    frozen = tune_garbage_collector()
    log.info("worker %d: %d startup objects frozen out of the garbage collector's passes", os.getpid(), frozen)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    context = multiprocessing.get_context("spawn")
    stopping = False

    def start():
        process = context.Process(target=_worker, args=(args.host, args.port), daemon=False)
        process.start()
        return process, time.monotonic()

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = [start() for _ in range(args.workers)]
    log.info("serving %s on http://%s:%d with %d workers (one SO_REUSEPORT socket each)",
             APPLICATION, args.host, args.port, args.workers)
    failed_starts = 0
    status = 0
    while not stopping:
        time.sleep(0.2)
        for i, (process, started) in enumerate(workers):
            if process.is_alive() or stopping:
                continue
            failed_starts = failed_starts + 1 if time.monotonic() - started < _START_SECONDS else 0
            if failed_starts >= _GIVE_UP_AFTER:
                log.error("workers keep exiting at start (last exit status %s): giving up", process.exitcode)
                stopping, status = True, 1
                break
            log.warning("worker %d exited with %s; starting another", process.pid, process.exitcode)
            workers[i] = start()
    for process, _ in workers:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes its requests and closes its connections
    deadline = time.monotonic() + 30
    for process, _ in workers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    return status


if __name__ == "__main__":
    sys.exit(main())
