"""Loopback helpers for tests and benchmarks that start real servers. No Django imports, so the
benchmark scripts can use them before Django is set up."""

import socket
import time


def free_port() -> int:
    """A TCP port nobody listens on now: fixed ports collide when two suites share a machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
