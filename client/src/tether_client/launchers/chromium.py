"""A plain Chromium as a launcher: one user-data dir per profile, started through Playwright.

Playwright's sync API belongs to the thread that started it, while the SDK calls a launcher from the
caller's thread (take, release) and from its heartbeat thread (revocation). So one worker thread owns
Playwright and every call is handed to it. It never downloads a browser: it starts the Chromium at
`executable_path` (Debian's `/usr/bin/chromium` by default). Each browser also listens for DevTools on
a free port, so `BrowserInfo.ws_endpoint` can be attached to (`chromium.connect_over_cdp`) like an
OctoBrowser profile's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from tether_client.launchers.base import LaunchError
from tether_client.models import Assignment, BrowserInfo

T = TypeVar("T")

DEFAULT_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
)


class ChromiumLauncher:
    def __init__(
        self,
        user_data_root: str | Path,
        *,
        executable_path: str = "/usr/bin/chromium",
        headless: bool = True,
        args: tuple[str, ...] | list[str] = DEFAULT_ARGS,
        start_timeout: float = 60.0,
    ) -> None:
        self.root = Path(user_data_root)
        self.executable_path = executable_path
        self.headless = headless
        self.args = list(args)
        self.start_timeout = start_timeout
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._contexts: dict[str, Any] = {}
        self._infos: dict[str, BrowserInfo] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- the Playwright thread ------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                started: Future[None] = Future()
                self._thread = threading.Thread(target=self._run, args=(started,), name="tether-chromium", daemon=True)
                self._thread.start()
                started.result(timeout=self.start_timeout)

    def _run(self, started: Future[None]) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            started.set_exception(LaunchError("the Chromium launcher needs Playwright: pip install 'tether-client[chromium]'"))
            return
        try:
            manager = sync_playwright().start()
        except Exception as exc:  # noqa: BLE001 — handed to the caller
            started.set_exception(LaunchError(f"Playwright did not start: {exc}"))
            return
        self._playwright = manager
        started.set_result(None)
        try:
            while True:
                item = self._calls.get()
                if item is None:
                    break
                fn, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 — handed to the caller
                        future.set_exception(exc)
        finally:
            for context in list(self._contexts.values()):
                try:
                    context.close()
                except Exception:  # noqa: BLE001, S110 — closing anyway
                    pass
            self._contexts.clear()
            manager.stop()

    def _call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        self._ensure_thread()
        future: Future[T] = Future()
        self._calls.put((fn, future))
        return future.result(timeout=timeout or self.start_timeout)

    def close(self) -> None:
        """Stop every browser and the Playwright thread."""
        if self._thread is not None and self._thread.is_alive():
            self._calls.put(None)
            self._thread.join(timeout=30)

    # --- the launcher interface -----------------------------------------------------------------

    def launch(self, profile_id: str, assignment: Assignment) -> BrowserInfo:
        return self._call(lambda: self._launch(profile_id))

    def stop(self, profile_id: str) -> None:
        self._call(lambda: self._stop(profile_id))

    def running(self) -> set[str]:
        return self._call(self._running)

    # --- on the Playwright thread ---------------------------------------------------------------

    def user_data_dir(self, profile_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in profile_id) or "_"
        return self.root / safe

    def _launch(self, profile_id: str) -> BrowserInfo:
        if profile_id in self._running():
            return self._infos[profile_id]
        directory = self.user_data_dir(profile_id)
        directory.mkdir(parents=True, exist_ok=True)
        port_file = directory / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        try:
            context = self._playwright.chromium.launch_persistent_context(
                str(directory), executable_path=self.executable_path, headless=self.headless,
                args=[*self.args, "--remote-debugging-port=0"], timeout=self.start_timeout * 1000,
            )
        except Exception as exc:  # noqa: BLE001 — Playwright's errors, as the launcher's
            raise LaunchError(f"Chromium did not start for profile {profile_id!r}: {str(exc).splitlines()[0]}") from None
        context.on("close", lambda _ctx: self._contexts.pop(profile_id, None))
        self._contexts[profile_id] = context
        info = BrowserInfo(profile_id=profile_id, raw={"user_data_dir": str(directory)})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # Chromium writes "PORT\n/devtools/browser/ID" once listening
            try:
                port, path = port_file.read_text().split("\n")[:2]
                info.debug_port, info.ws_endpoint = int(port), f"ws://127.0.0.1:{port}{path}"
                break
            except (OSError, ValueError):
                time.sleep(0.05)
        self._infos[profile_id] = info
        return info

    def _stop(self, profile_id: str) -> None:
        context = self._contexts.pop(profile_id, None)
        self._infos.pop(profile_id, None)
        if context is not None:
            try:
                context.close()
            except Exception:  # noqa: BLE001, S110 — already gone is stopped
                pass

    def _running(self) -> set[str]:
        alive = set()
        for profile_id, context in list(self._contexts.items()):
            try:
                context.cookies()  # a round trip to the browser; raises once it is gone
            except Exception:  # noqa: BLE001 — a dead browser is simply not running
                self._contexts.pop(profile_id, None)
                continue
            alive.add(profile_id)
        return alive
