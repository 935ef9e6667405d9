"""Loopback helpers for tests and benchmarks that start real servers. No Django imports, so the
benchmark scripts can use them before Django is set up."""

import os
import random
import socket
import time

_taken: set[int] = set()


def free_port() -> int:
    """A TCP port nobody listens on now: fixed ports collide when two suites share a machine.
    With TETHER_TEST_PORTS=LOW-HIGH (a machine that gives each suite a range), one from that range."""
    span = os.environ.get("TETHER_TEST_PORTS", "").strip()
    if not span:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    low, _, high = span.partition("-")
    candidates = [p for p in range(int(low), int(high) + 1) if p not in _taken]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)  # handed out once per process: the caller may not have bound it yet
        return port
    raise RuntimeError(f"no free port left in TETHER_TEST_PORTS={span}")


def wait_for_port(port: int, process, *, timeout: float = 60.0, log_tail=lambda: "") -> None:
    """Return once something listens on 127.0.0.1:`port`. Raise RuntimeError, with the tail of the
    server's log, if `process` exits first or nothing listens within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for port {port} exited ({process.returncode}):\n{log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s:\n{log_tail()}")
