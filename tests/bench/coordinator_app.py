"""Serve the AITBC agent coordinator from a checkout the operator gives (`make bench-coordinator`).

Run with the coordinator's own virtualenv (var/coordinator-venv, made by bench_coordinator.py), not
Tether's: this file imports only the standard library and, from the checkout, the coordinator's
app. Nothing of the coordinator is copied here; its code is imported from COORDINATOR as its systemd
unit does (PYTHONPATH = the repository root and apps/agent-coordinator/src).

What runs is the coordinator's own application object, built by its `main.create_app()` (all its
routers, CORS, its request-logging and security-headers middleware, its exception handlers) with its
own lifespan (the Redis-backed AgentRegistry, load balancer, task distributor, message storage, the
coin-request database under AITBC_HOME), served the way Tether's `make serve` serves Tether: one
uvicorn process, uvloop, httptools, no access log. What differs from its systemd service, and why:

- rate limiting off. Its per-route limits (`@rate_limit`, 50–200 a minute per client address) are
  turned off by its own switch, AITBC_ENABLE_RATE_LIMITING=false; its RateLimitMiddleware (100
  requests a minute per client address, no switch) is taken out of the middleware list: at that
  rate it answers a benchmark with 429, and at a rate high enough to let one through its
  sliding window keeps every request time of the last minute and filters that list on each request,
  a cost that grows with the load. Tether runs with its throttle on, its rate raised.
- logging at WARNING (its service logs every request at INFO), as Tether's bench runs with
  TETHER_LOG_LEVEL=WARNING.
- REDIS_URL, SECRET_KEY and AITBC_HOME (its data and log folders) come from the environment
  bench_coordinator.py sets: a Redis database of its own on 127.0.0.1, a scratch folder in var/.

    var/coordinator-venv/bin/python tests/bench/coordinator_app.py --source PATH --port 9101
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path


def locate(source: str) -> tuple[Path, Path, str]:
    """(repository root, apps/agent-coordinator/src, the app's package name) for a checkout given
    as the repository root or as its apps/agent-coordinator folder. The package is `app` up to
    commit 015052705 of oib/AITBC and `agent_app` from it on."""
    path = Path(source).resolve()
    for root in (path, *path.parents):
        if (root / "aitbc" / "__init__.py").is_file() and (root / "apps" / "agent-coordinator").is_dir():
            break
    else:
        sys.exit(f"{source}: not a checkout of oib/AITBC (no aitbc/ package and apps/agent-coordinator above it)")
    src = root / "apps" / "agent-coordinator" / "src"
    for package in ("app", "agent_app"):
        if (src / package / "routers" / "agents.py").is_file():
            return root, src, package
    sys.exit(f"{src}: no app/routers/agents.py nor agent_app/routers/agents.py")


def application(source: str):
    root, src, package = locate(source)
    # As its systemd unit sets PYTHONPATH (the shared aitbc_shared package is installed from the
    # checkout in its pyproject; here it is put on the path the same way).
    for path in (root / "packages" / "aitbc-shared", src, root):
        sys.path.insert(0, str(path))
    main = importlib.import_module(f"{package}.main")
    app = main.app
    from aitbc.aitbc_logging import configure_logging

    configure_logging(level=os.environ.get("COORDINATOR_LOG_LEVEL", "WARNING"))
    app.user_middleware = [m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "RateLimitMiddleware"]
    app.middleware_stack = None  # rebuilt on first request, from the list above
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="a checkout of oib/AITBC (root or apps/agent-coordinator)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args()
    if os.environ.get("AITBC_ENABLE_RATE_LIMITING", "").lower() != "false":
        sys.exit("set AITBC_ENABLE_RATE_LIMITING=false (bench_coordinator.py does)")
    app = application(args.source)

    import uvicorn

    uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                                  access_log=False, log_level="warning")).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
