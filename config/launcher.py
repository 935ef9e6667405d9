"""`make run`: the whole living system in one command, stopped by one Ctrl-C.

Starts, as child processes it owns:
- the ASGI web server (daphne: HTTP, WebSocket, dashboard, API);
- with a broker (REDIS_URL / CELERY_BROKER_URL): a Celery worker and Celery beat, which run the
  background jobs (config/jobs.py); in embedded mode (in-memory broker) the web process runs them
  itself instead (config/embedded_jobs.py), so there are no Celery processes to start;
- the simulator (`manage.py simulate_agents`), a fleet of agents using the public API.
Ctrl-C (or SIGTERM) stops every child it started — SIGTERM first, SIGKILL after a grace period —
and the launcher stops everything too if the web server, worker or beat dies.

    python -m config.launcher [--host 127.0.0.1] [--port 8000] [--no-simulator] [--simulator-args "..."]
"""

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 10


def _say(message: str) -> None:
    print(f"[tether] {message}", flush=True)


def _wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


class Children:
    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> None:
        _say(f"starting {name}: {' '.join(shlex.quote(a) for a in argv)}")
        # A session of its own: the terminal's Ctrl-C reaches only the launcher, which then stops
        # each child in order (a worker receiving SIGINT twice would skip its warm shutdown).
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[name] = subprocess.Popen(argv, cwd=BASE_DIR, env=env, start_new_session=True)

    def stop_all(self) -> None:
        """Newest first, each one gone before the next is asked: the simulator stops before the
        web server it talks to, the beat before the worker it feeds."""
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                _say(f"stopping {name} (pid {proc.pid})")
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in {STOP_GRACE_SECONDS} s: killing it")
                proc.kill()
                proc.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--no-simulator", action="store_true")
    parser.add_argument("--simulator-args", default="", help="extra arguments for simulate_agents")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    python = sys.executable
    children = Children()
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    essential = ["web"]
    try:
        daphne = str(Path(python).with_name("daphne"))
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        access_log = settings.VAR_DIR / "access.log"
        _say(f"HTTP access log: {access_log}")
        children.start("web", [daphne, "-b", args.host, "-p", str(args.port), "--access-log", str(access_log),
                               "config.asgi:application"])
        if settings.TETHER_EMBEDDED_JOBS:
            _say("embedded mode: the background jobs run inside the web process (no Celery processes)")
        else:
            schedule = settings.VAR_DIR / "celerybeat-schedule"
            children.start("worker", [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                                      "--concurrency", str(args.worker_concurrency), "--without-gossip",
                                      "--without-mingle", "--hostname", f"tether-{os.getpid()}@%h"])
            children.start("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                                    "--schedule", str(schedule)])
            essential += ["worker", "beat"]
        url = f"http://{args.host}:{args.port}"
        if not _wait_for_port(args.host, args.port, timeout=60):
            _say(f"the web server did not answer on {url} within 60 s")
            return 1
        try:
            # The first request also starts the embedded job loop (daphne has no start-up hook).
            urllib.request.urlopen(f"{url}/health", timeout=10).read()
        except Exception as exc:  # noqa: BLE001 — 503 or a slow first answer: report and carry on
            _say(f"/health did not answer cleanly yet: {exc}")
        if not args.no_simulator:
            children.start("simulator", [python, "manage.py", "simulate_agents", "--url", url,
                                         *shlex.split(args.simulator_args)])
        _say(f"Tether is running on {url}  (dashboard /, admin /admin/, health /health) — Ctrl-C stops everything")
        while not stopping:
            for name, proc in children.procs.items():
                code = proc.poll()
                if code is None:
                    continue
                if name in essential:
                    _say(f"{name} exited with code {code}: stopping everything")
                    return code or 1
                if name == "simulator":
                    _say(f"the simulator exited with code {code}; the rest keeps running")
                    children.procs.pop(name)
                    break
            time.sleep(0.3)
        _say("stopping")
        return 0
    finally:
        children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
