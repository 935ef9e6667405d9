"""The `tether` command as a script runs it: a subprocess, its stdout, stderr and exit status."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TETHER = shutil.which("tether", path=str(Path(sys.executable).parent)) or "tether"


def tether(*args, url=None, token=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    if url is not None:
        env["TETHER_URL"] = url
    if token is not None:
        env["TETHER_TOKEN"] = token
    return subprocess.run([TETHER, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_lists_are_tables_and_json(world):
    agent = world.agent()
    lease = agent.profile(world.profiles[0])

    pools = tether("pools", url=world.url, token=world.operator_token)
    assert pools.returncode == 0, pools.stderr
    header, *rows = pools.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "PLATFORM", "REGION", "STRATEGY"]
    assert any(row.split()[0] == world.pool for row in rows)

    agents = tether("agents", "--pool", world.pool, url=world.url, token=world.operator_token)
    assert agents.returncode == 0 and agent.agent_id in agents.stdout and "active" in agents.stdout

    assignments = tether("--json", "assignments", "--pool", world.pool, url=world.url, token=world.operator_token)
    data = json.loads(assignments.stdout)
    assert [a["assignment_id"] for a in data] == [lease.assignment_id]

    profiles = tether("profiles", "--pool", world.pool, url=world.url, token=agent.token)  # any credential reads
    assert profiles.returncode == 0 and all(p in profiles.stdout for p in world.profiles)
    lease.release()
    assert "no assignments" in tether("assignments", "--pool", world.pool, url=world.url, token=world.operator_token).stdout


def test_release_and_drain_act_and_say_so(world):
    agent = world.agent("w1")
    world.agent("w2")
    lease = agent.profile(world.profiles[0])

    released = tether("release", lease.assignment_id, url=world.url, token=world.operator_token)
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == f"{lease.assignment_id}: releasing (its agent confirms)"
    agent.heartbeat()
    assert lease.revoked

    drained = tether("drain", agent.agent_id, url=world.url, token=world.operator_token)
    assert drained.returncode == 0 and drained.stdout.strip() == f"drained {agent.agent_id}: status inactive"


def test_exit_codes_a_script_can_branch_on(world):
    agent = world.agent()
    ops = ("--url", world.url)
    # 4: an agent's token may not drain (operators only), and a bad token is refused
    forbidden = tether(*ops, "--token", agent.token, "drain", agent.agent_id)
    assert forbidden.returncode == 4 and forbidden.stderr.startswith("tether: ")
    bad_token = tether(*ops, "--token", "not0a0real0token", "pools")
    assert bad_token.returncode == 4
    assert bad_token.stderr.count("\n") == 1 and "invalid or revoked token" in bad_token.stderr
    assert "Traceback" not in bad_token.stderr
    # 5: not found
    missing = tether(*ops, "--token", world.operator_token, "drain", "no-such-agent")
    assert missing.returncode == 5 and "no-such-agent" in missing.stderr
    # 2: usage, bad JSON
    assert tether(*ops, "submit", world.pool, "--payload", "{nope").returncode == 2
    assert tether(*ops, "frobnicate").returncode == 2
    # 6: refused — releasing with a stale fencing token
    lease = agent.profile(world.profiles[0])
    stale = tether(*ops, "--token", world.operator_token, "release", lease.assignment_id,
                   "--fencing-token", str(lease.fencing_token + 1))
    assert stale.returncode == 6 and "stale_fencing_token" in stale.stderr
    # 7: invalid request
    invalid = tether(*ops, "--token", world.operator_token, "assignments", "--status", "bogus")
    assert invalid.returncode == 7, invalid.stderr
    lease.release()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "not a url", "ftp://example.invalid/x", "http://"])
def test_a_bad_url_fails_with_one_clear_line(transactional_db, url):
    result = tether("--retries", "0", "pools", url=url, token="x")
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tether: ")
    assert "Traceback" not in result.stderr


def test_watch_tails_the_event_stream(world):
    agent = world.agent()
    with agent.profile(world.profiles[0]) as lease:
        pass
    watch = tether("--json", "watch", "--since", "0", "--pool", world.pool, "--types", "assignment.", "--count", "2",
                   url=world.url, token=world.operator_token)
    assert watch.returncode == 0, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert [(e["type"], e["assignment_id"]) for e in events] == [
        ("assignment.created", lease.assignment_id), ("assignment.released", lease.assignment_id)]

    plain = tether("watch", "--since", "0", "--pool", world.pool, "--types", "assignment.", "--timeout", "1",
                   url=world.url, token=world.operator_token)
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and "assignment.created" in lines[0] and f"profile={world.profiles[0]}" in lines[0]


def test_watch_without_since_shows_only_new_events(world):
    agent = world.agent()
    with agent.profile(world.profiles[0]):
        pass
    proc = subprocess.Popen([TETHER, "--url", world.url, "--token", world.operator_token, "--json", "watch",
                             "--pool", world.pool, "--count", "1", "--timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import time

        time.sleep(2.5)  # let it connect
        with agent.profile(world.profiles[1]) as lease:
            pass
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["assignment_id"] == lease.assignment_id


def test_submit_sends_a_task(world):
    """`POST /api/tasks` is not on the server yet: until it is, the command fails cleanly (not found)."""
    result = tether("submit", world.pool, "--payload", '{"url": "https://example.com"}', "--priority", "high",
                    url=world.url, token=world.operator_token)
    if result.returncode == 5:
        pytest.xfail("the server has no /api/tasks yet")
    assert result.returncode == 0, result.stderr
    assert "queued" in result.stdout or "assigned" in result.stdout
