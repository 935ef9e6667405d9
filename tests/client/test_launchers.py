"""Launchers enforce what Tether decides: a take starts the browser, a release or a revocation stops
it, the heartbeat reports what runs and stops what the agent does not hold. OctoBrowser's local API is
a fake the tests start (tests/client/fake_octo.py); Chromium is Debian's, through Playwright."""

import os
import socket

import httpx
import pytest

from tether_client import ChromiumLauncher, Conflict, LaunchError, OctoLauncher
from tests.client.fake_octo import FakeOcto

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CHROMIUM = os.environ.get("TETHER_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def octo():
    fake = FakeOcto()
    yield fake
    fake.close()


def test_octo_launcher_speaks_the_local_api(octo):
    launcher = OctoLauncher(octo.url, headless=True)
    from tether_client.models import Assignment

    assignment = Assignment(assignment_id="a", profile_id="uuid-1", agent_id="w", pool="p", status="active",
                            fencing_token=1)
    info = launcher.launch("uuid-1", assignment)
    assert octo.calls[0] == ("POST", "/api/profiles/start", {"uuid": "uuid-1", "headless": True, "debug_port": True})
    assert info.ws_endpoint.startswith("ws://127.0.0.1:") and info.debug_port and info.pid
    assert launcher.running() == {"uuid-1"}
    assert launcher.launch("uuid-1", assignment).ws_endpoint == info.ws_endpoint  # already running: attach
    launcher.stop("uuid-1")
    assert ("POST", "/api/profiles/stop", {"uuid": "uuid-1"}) in octo.calls
    assert launcher.running() == set()
    launcher.stop("uuid-1")  # stopping a stopped profile is not an error


def test_octo_launcher_unreachable_is_a_launch_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LaunchError, match="did not answer"):
        OctoLauncher(f"http://127.0.0.1:{port}", timeout=2).running()


def test_a_take_launches_the_profile_and_the_release_stops_it(world, octo):
    agent = world.agent()
    agent.launcher = OctoLauncher(octo.url)

    with agent.profile(world.profiles[0]) as lease:
        assert set(octo.running) == {world.profiles[0]}
        assert lease.browser.ws_endpoint == octo.running[world.profiles[0]]["ws_endpoint"]
    assert octo.running == {}
    stop_at = next(i for i, c in enumerate(octo.calls) if c[1] == "/api/profiles/stop")
    assert stop_at > 0
    assert world.ops().assignment(lease.assignment_id).status == "released"


def test_a_browser_that_fails_to_start_gives_the_profile_back(world, octo):
    agent = world.agent()
    agent.launcher = OctoLauncher(octo.url)
    agent.launcher.uuid_for = lambda profile_id: ""  # the fake refuses a start without uuid

    with pytest.raises(LaunchError):
        agent.profile(world.profiles[0])
    assert world.ops().holder(world.profiles[0])["available"] is True
    assert agent.held == []


def test_a_revoked_assignment_stops_its_browser_and_the_heartbeat_reports_what_runs(world, octo):
    agent = world.agent()
    agent.launcher = OctoLauncher(octo.url)
    kept = agent.profile(world.profiles[1])
    revoked = agent.profile(world.profiles[0])
    assert set(octo.running) == {world.profiles[0], world.profiles[1]}

    world.ops().release(revoked.assignment_id)  # an operator's force-release: the agent must let go
    agent.heartbeat()

    assert revoked.revoked and not kept.revoked
    assert set(octo.running) == {world.profiles[1]}, "the revoked profile's browser still runs"
    assert world.ops().assignment(revoked.assignment_id).status == "released"
    assert world.ops().agent(agent.agent_id)["load_metrics"]["browsers_running"] == 2  # before it stopped one
    agent.heartbeat()
    assert world.ops().agent(agent.agent_id)["load_metrics"]["browsers_running"] == 1
    kept.release()


def test_the_heartbeat_stops_a_browser_running_for_a_profile_the_agent_does_not_hold(world, octo):
    """Someone else holds the profile, yet a browser runs it here (started by hand, or left from a
    crash): it is stopped, so two browsers never drive one profile."""
    holder, agent = world.agent("w1"), world.agent("w2")
    agent.launcher = OctoLauncher(octo.url)
    with holder.profile(world.profiles[0]):
        octo.start_out_of_band(world.profiles[0])
        with pytest.raises(Conflict):
            agent.profile(world.profiles[0])
        agent.heartbeat()
        assert octo.running == {}


def test_the_background_heartbeat_stops_the_browser_when_the_agent_is_drained(world, octo):
    agent = world.agent("w1")
    world.agent("w2")
    agent.launcher = OctoLauncher(octo.url)
    agent.heartbeat_interval = 0.3
    lease = agent.profile(world.profiles[0])
    agent.start()
    try:
        world.ops().drain(agent.agent_id)
        assert lease.wait_revoked(timeout=15)
    finally:
        agent.stop()
    assert octo.running == {}


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_chromium_launcher_runs_a_user_data_dir_and_revocation_stops_it(world, tmp_path):
    launcher = ChromiumLauncher(tmp_path / "profiles", executable_path=CHROMIUM)
    agent = world.agent()
    agent.launcher = launcher
    try:
        lease = agent.profile(world.profiles[0])
        assert launcher.running() == {world.profiles[0]}
        assert (tmp_path / "profiles" / world.profiles[0]).is_dir()
        version = httpx.get(f"http://127.0.0.1:{lease.browser.debug_port}/json/version", timeout=10).json()
        assert version["webSocketDebuggerUrl"] == lease.browser.ws_endpoint  # attachable over CDP

        world.ops().release(lease.assignment_id)
        agent.heartbeat()

        assert lease.revoked and launcher.running() == set()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{lease.browser.debug_port}/json/version", timeout=2)
    finally:
        launcher.close()


def test_the_server_tells_the_agent_to_stop_a_browser_it_does_not_hold(world, octo):
    """Tether, not only the SDK's own books, enforces the lock where the browser runs: the heartbeat
    reports what the launcher says runs (`running_profiles`), and the reply's `stop_profiles` names
    what this agent does not hold — here with the SDK's own check switched off."""
    holder, agent = world.agent("w1"), world.agent("w2")
    agent.launcher = OctoLauncher(octo.url)
    agent.stop_unheld_browsers = False
    mine = agent.profile(world.profiles[1])
    with holder.profile(world.profiles[0]):
        octo.start_out_of_band(world.profiles[0])
        reply = agent.heartbeat()
        assert reply["stop_profiles"] == [world.profiles[0]]
        assert set(octo.running) == {world.profiles[1]}, "the unheld browser still runs"
    assert not mine.revoked
    mine.release()
