"""The launcher interface: where Tether's decisions reach the browser.

The SDK calls a launcher when it takes a profile (`launch`), when it releases one or is told to drop
it (`stop`), and at every heartbeat (`running`): a browser running for a profile the agent no longer
holds is stopped, and the heartbeat reports how many browsers run. So a revoked assignment — an
operator's force-release, a drain, a failover to another agent — ends the browser too, instead of
leaving two browsers on one profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tether_client.models import Assignment, BrowserInfo


@runtime_checkable
class Launcher(Protocol):
    def launch(self, profile_id: str, assignment: Assignment) -> BrowserInfo:
        """Start the browser for this profile (or return the one already running) and say where to
        attach to it. Raise `LaunchError` when it cannot start."""
        ...

    def stop(self, profile_id: str) -> None:
        """Stop the browser of this profile; stopping one that is not running is not an error."""
        ...

    def running(self) -> set[str]:
        """The profile ids whose browser runs now."""
        ...


class LaunchError(Exception):
    """A launcher could not start or stop a browser."""
