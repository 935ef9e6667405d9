"""docs/agents.md works as written: its Python blocks run, in order, against a real server (with the
fake OctoBrowser local API of these tests). Blocks marked `docs-test: awaits …` would use server endpoints
still being built (none at present: tasks, selection by requirements and outcome reports have
landed): they must compile, they run too, and while the server refuses them (404, or 400 for fields
it does not know yet) the test is an expected failure that names them."""

import re
from pathlib import Path

import pytest

from tests.client.fake_octo import FakeOcto

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "agents.md"
BLOCK = re.compile(r"<!-- docs-test: (?P<mark>[^>]*?) -->\s*```python\n(?P<code>.*?)```", re.S)


def blocks():
    return [(m["mark"].strip(), m["code"]) for m in BLOCK.finditer(PAGE.read_text())]


def test_the_page_has_the_blocks_it_promises():
    marks = [mark for mark, _ in blocks()]
    assert marks.count("today") >= 6 and all(m == "today" or m.startswith("awaits") for m in marks), marks
    for i, (_, code) in enumerate(blocks()):
        compile(code, f"docs/agents.md block {i + 1}", "exec")


def test_the_page_runs_against_the_server(world, monkeypatch, capsys):
    from tether_client import NotFound, ValidationError

    octo = FakeOcto()
    monkeypatch.setenv("TETHER_URL", world.url)
    monkeypatch.setenv("TETHER_ENROLLMENT_TOKEN", world.enrollment_token)
    monkeypatch.setenv("TETHER_OPERATOR_TOKEN", world.operator_token)
    monkeypatch.setenv("TETHER_POOL", world.pool)
    monkeypatch.setenv("AGENT_ID", f"{world.prefix}-skyvern")
    monkeypatch.setenv("PROFILE_ID", world.profiles[0])
    monkeypatch.setenv("OCTO_URL", octo.url)
    namespace: dict = {"__name__": "docs_agents"}
    awaiting = []
    try:
        for i, (mark, code) in enumerate(blocks()):
            compiled = compile(code, f"docs/agents.md block {i + 1}", "exec")
            if mark == "today":
                exec(compiled, namespace)  # noqa: S102 — the page's own code
            else:
                try:
                    exec(compiled, namespace)  # noqa: S102
                except (NotFound, ValidationError) as exc:
                    awaiting.append(f"block {i + 1} ({mark}): {exc}")
            if i == 1:  # after "take a profile, run, release"
                lease = namespace["lease"]
                assert lease.released and namespace["result"]["ok"]
                assert namespace["result"]["browser"].startswith("ws://127.0.0.1:")
                done = world.ops().assignment(lease.assignment_id)
                assert done.status == "released" and done.metadata == {"last_result": "ok"}
                assert [c[1] for c in octo.calls if c[0] == "POST"] == ["/api/profiles/start", "/api/profiles/stop"]
    finally:
        agent = namespace.get("agent")
        if agent is not None:
            world.agents.append(agent)
            agent.stop()
        octo.close()

    assert agent.agent_id == f"{world.prefix}-skyvern" and agent.held == []
    out = capsys.readouterr().out
    assert f"{world.prefix}-skyvern" in out and "assignment.created" in out
    if awaiting:
        pytest.xfail("the server does not answer these yet: " + "; ".join(awaiting))
