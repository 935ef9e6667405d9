"""Browser launchers: `Launcher` (the interface the SDK calls), `OctoLauncher` (OctoBrowser's local
client API) and `ChromiumLauncher` (a Chromium user-data dir per profile, through Playwright)."""

from tether_client.launchers.base import Launcher, LaunchError
from tether_client.launchers.chromium import ChromiumLauncher
from tether_client.launchers.octo import OctoLauncher

__all__ = ["ChromiumLauncher", "LaunchError", "Launcher", "OctoLauncher"]
