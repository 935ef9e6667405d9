"""`tether`: Tether from a shell, for operators and scripts.

    tether [--url URL] [--token TOKEN] [--json] COMMAND ...

`--url` defaults to $TETHER_URL (else http://127.0.0.1:8000), `--token` to $TETHER_TOKEN. Lists are
tables (`--json`: the API's JSON). Errors are one line on stderr — never a traceback — and the exit
status says what went wrong, so a script can branch on it:

    0  done
    1  the server failed (5xx) or something unexpected
    2  bad usage (unknown command or option, bad --payload JSON)
    3  Tether could not be reached (bad URL, connection refused, timeout)
    4  not authenticated or not allowed (missing or bad token, not an operator)
    5  not found
    6  refused: conflict, stale fencing token, wrong state (409, 422)
    7  invalid request (400)
    8  throttled or unavailable, after the retries (429, 503)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from tether_client import __version__
from tether_client.client import Client
from tether_client.errors import (
    ApiError,
    ConnectionFailed,
    Forbidden,
    NotAuthenticated,
    NotFound,
    ServiceUnavailable,
    TetherError,
    Throttled,
    ValidationError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_INVALID, \
    EXIT_BUSY = range(9)
EXIT_INTERRUPTED = 130

DEFAULT_URL = "http://127.0.0.1:8000"
LIVE_STATUSES = ("pending", "active", "idle", "releasing")

# Columns of each table: (heading, key or function of the row).
Column = tuple[str, "str | Callable[[dict[str, Any]], Any]"]
COLUMNS: dict[str, list[Column]] = {
    "pools": [("NAME", "name"), ("PLATFORM", "platform"), ("REGION", "region"), ("STRATEGY", "strategy"),
              ("AGENTS", lambda r: _count(r, "agents")),
              ("LIVE", lambda r: _count(r, "live_assignments")),
              ("WAITING", lambda r: _count(r, "waiting_assignments")),
              ("QUEUED", lambda r: _count(r, "queued_tasks")),
              ("HB TIMEOUT", "heartbeat_timeout_seconds")],
    "agents": [("AGENT", "agent_id"), ("POOL", "pool"), ("STATUS", "status"), ("TYPE", "agent_type"),
               ("HEALTH", lambda r: _num(r.get("health_score"))), ("CAPACITY", "capacity"),
               ("LAST HEARTBEAT", "last_heartbeat")],
    "profiles": [("PROFILE", "profile_id"), ("NAME", "name"), ("POOL", "pool"), ("REGION", "region"),
                 ("TAGS", lambda r: ",".join(r.get("tags") or [])), ("ENABLED", "enabled")],
    "assignments": [("ASSIGNMENT", "assignment_id"), ("PROFILE", "profile_id"), ("AGENT", "agent_id"),
                    ("POOL", "pool"), ("STATUS", "status"), ("TOKEN", "fencing_token"),
                    ("ASSIGNED AT", "assigned_at")],
    "tasks": [("TASK", "task_id"), ("POOL", "pool"), ("PRIORITY", "priority"), ("STATUS", "status"),
              ("AGENT", "agent_id"), ("ATTEMPT", "attempt"), ("SUBMITTED AT", "submitted_at")],
}


def _count(row: dict[str, Any], key: str) -> Any:
    """A pool's count: under `counts` (as the API nests them), or at the top level."""
    counts = row.get("counts")
    if isinstance(counts, dict) and key in counts:
        return counts[key]
    return row.get(key, "")


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    table = [[heading for heading, _ in columns]]
    for row in rows:
        table.append([_cell(getter(row) if callable(getter) else row.get(getter)) for _, getter in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"tether: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tether", description="Tether from a shell: the fleet, its assignments, tasks and events.",
                     epilog="Exit status: 0 done, 1 server error, 2 usage, 3 unreachable, 4 not authenticated or "
                            "allowed, 5 not found, 6 refused (conflict), 7 invalid request, 8 throttled or "
                            "unavailable, 130 interrupted.")
    parser.add_argument("--url", default=os.environ.get("TETHER_URL") or DEFAULT_URL,
                        help="Tether's base URL (default: $TETHER_URL, else %(default)s)")
    parser.add_argument("--token", default=os.environ.get("TETHER_TOKEN"),
                        help="API token (default: $TETHER_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=2, help="retries of what is safe to retry (default: %(default)s)")
    parser.add_argument("--version", action="version", version=f"tether-client {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    pools = commands.add_parser("pools", help="list pools")
    pools.add_argument("--limit", type=int)
    agents = commands.add_parser("agents", help="list agents")
    agents.add_argument("--pool")
    agents.add_argument("--status")
    agents.add_argument("--limit", type=int)
    profiles = commands.add_parser("profiles", help="list profiles")
    profiles.add_argument("--pool")
    profiles.add_argument("--limit", type=int)
    assignments = commands.add_parser("assignments", help="list assignments (the live ones unless --status)")
    assignments.add_argument("--status", help="comma list, e.g. active,idle; 'all' for every one")
    assignments.add_argument("--agent", dest="agent_id")
    assignments.add_argument("--profile", dest="profile_id")
    assignments.add_argument("--pool")
    assignments.add_argument("--limit", type=int)
    tasks = commands.add_parser("tasks", help="list tasks")
    tasks.add_argument("--status")
    tasks.add_argument("--pool")
    tasks.add_argument("--priority")
    tasks.add_argument("--agent", dest="agent_id")
    tasks.add_argument("--limit", type=int)

    drain = commands.add_parser("drain", help="drain an agent: no new work, its assignments move away")
    drain.add_argument("agent_id", metavar="AGENT")
    release = commands.add_parser("release", help="release an assignment (force-release when its agent is alive)")
    release.add_argument("assignment_id", metavar="ASSIGNMENT")
    release.add_argument("--fencing-token", type=int)
    submit = commands.add_parser("submit", help="submit a task to a pool")
    submit.add_argument("pool", metavar="POOL")
    submit.add_argument("--payload", required=True, help="the task's payload, a JSON object")
    submit.add_argument("--priority", default="normal", choices=["urgent", "critical", "high", "normal", "low"])
    submit.add_argument("--requirements", help="a JSON object: capabilities, agent_type, region, tags...")
    submit.add_argument("--task-id")
    watch = commands.add_parser("watch", help="follow the event stream (Ctrl-C stops)")
    watch.add_argument("--since", type=int, default=None, help="replay from after this seq (default: only new events)")
    watch.add_argument("--types", help="comma list; 'assignment.' matches a prefix")
    watch.add_argument("--pool")
    watch.add_argument("--agent", dest="agent_id")
    watch.add_argument("--profile", dest="profile_id")
    watch.add_argument("--count", type=int, help="stop after this many events")
    watch.add_argument("--timeout", dest="watch_timeout", type=float,
                       help="stop after this many seconds without an event")
    return parser


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _Usage(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Usage(f"{option} must be a JSON object")
    return value


class _Usage(Exception):
    pass


def _print_rows(kind: str, rows: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif rows:
        out.write(render_table(rows, COLUMNS[kind]) + "\n")
    else:
        out.write(f"no {kind}\n")


def _event_line(event: Any) -> str:
    parts = [f"{event.seq:>8}", event.occurred_at or "", event.type]
    for label, value in (("pool", event.pool), ("agent", event.agent_id), ("profile", event.profile_id),
                         ("assignment", event.assignment_id)):
        if value:
            parts.append(f"{label}={value}")
    if event.from_status or event.to_status:
        parts.append(f"{event.from_status or '-'}→{event.to_status or '-'}")
    return "  ".join(parts)


def run(args: argparse.Namespace, out: TextIO) -> int:
    client = Client(args.url, token=args.token, timeout=args.timeout, max_retries=args.retries)
    try:
        command = args.command
        if command in COLUMNS:
            filters = {k: getattr(args, k, None) for k in ("pool", "status", "agent_id", "profile_id", "priority")}
            filters = {k: v for k, v in filters.items() if v is not None}
            if command == "assignments":  # the live ones unless asked; `all` means no filter
                status = filters.pop("status", None) or ",".join(LIVE_STATUSES)
                if status != "all":
                    filters["status"] = status
            rows = getattr(client, command)(limit=args.limit, **filters)
            _print_rows(command, rows, args.json, out)
        elif command == "drain":
            agent = client.drain(args.agent_id)
            out.write(json.dumps(agent, indent=2) + "\n" if args.json else
                      f"drained {agent.get('agent_id')}: status {agent.get('status')}\n")
        elif command == "release":
            assignment = client.release(args.assignment_id, fencing_token=args.fencing_token)
            out.write(json.dumps(assignment.raw, indent=2) + "\n" if args.json else
                      f"{assignment.assignment_id}: {assignment.status}"
                      f"{' (its agent confirms)' if assignment.status == 'releasing' else ''}\n")
        elif command == "submit":
            payload = _json_object(args.payload, "--payload")
            extra: dict[str, Any] = {}
            if args.requirements:
                extra["requirements"] = _json_object(args.requirements, "--requirements")
            task = client.submit(pool=args.pool, payload=payload, priority=args.priority, task_id=args.task_id, **extra)
            out.write(json.dumps(task, indent=2) + "\n" if args.json else
                      f"{task.get('task_id')}: {task.get('status')} ({task.get('priority')}, pool {task.get('pool')})\n")
        elif command == "watch":
            seen = 0  # without --since: only what happens from now on (the server streams from the handshake)
            with client.events(since=args.since, **_watch_filters(args)) as stream:
                while args.count is None or seen < args.count:
                    event = stream.get(timeout=args.watch_timeout)
                    if event is None:
                        break
                    out.write((json.dumps(event.raw) if args.json else _event_line(event)) + "\n")
                    out.flush()
                    seen += 1
        return EXIT_OK
    finally:
        client.close()


def _watch_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("types", "pool", "agent_id", "profile_id") if getattr(args, k)}


def exit_code(error: TetherError) -> int:
    if isinstance(error, ConnectionFailed):
        return EXIT_UNREACHABLE
    if isinstance(error, (NotAuthenticated, Forbidden)):
        return EXIT_AUTH
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, (Throttled, ServiceUnavailable)):
        return EXIT_BUSY
    if isinstance(error, ValidationError) and error.status == 400:
        return EXIT_INVALID
    if isinstance(error, ApiError) and error.status in (409, 422):
        return EXIT_REFUSED
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL) if hasattr(signal, "SIGPIPE") else None
    try:
        return run(args, out or sys.stdout)
    except _Usage as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TetherError as exc:
        if isinstance(exc, NotAuthenticated):
            hint = " (set --token or TETHER_TOKEN)" if not args.token else " (check --token / TETHER_TOKEN)"
        else:
            hint = ""
        message = exc.message if not isinstance(exc, ApiError) else f"{exc.message} [{exc.code}, HTTP {exc.status}]"
        print(f"tether: {message}{hint}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 — one line, never a traceback
        print(f"tether: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
