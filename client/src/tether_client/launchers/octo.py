"""OctoBrowser's local client API as a launcher.

The OctoBrowser desktop client serves a local HTTP API (by default on http://127.0.0.1:58888; the
client writes its port to `~/.Octo Browser/local_port`). What this launcher uses of it, from Octo
Browser's public API documentation ("Local Client API": start, stop and list active profiles):

- `POST /api/profiles/start` `{"uuid", "headless", "debug_port": true}` → the running profile:
  `{"uuid", "state": "STARTED", "headless", "start_time", "ws_endpoint":
  "ws://127.0.0.1:PORT/devtools/browser/…", "debug_port": "PORT", "one_time", "browser_pid"}`;
- `POST /api/profiles/stop` `{"uuid"}`;
- `GET /api/profiles/active` → the running profiles, each in the shape above.

The shapes were checked against public clients of that API (e.g. the `OctoBrowserApi` service of
github.com/blissfulalmeida/radio-shop, `src/services/octo-browser/{index,types}.js`, which starts
profiles with exactly that body and documents that reply). Newer clients may wrap replies as
`{"success", "data", "error"}`; both forms are read. Tether's `profile_id` is the vendor's id, so it
is the Octo profile's `uuid` unless `uuid_for` maps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tether_client.launchers.base import LaunchError
from tether_client.models import Assignment, BrowserInfo

DEFAULT_URL = "http://127.0.0.1:58888"


class OctoLauncher:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        headless: bool = True,
        timeout: float = 60.0,
        uuid_for: Callable[[str], str] | None = None,
        extra_start: dict[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`extra_start` adds fields to the start request (`flags`, `password`, `timeout`...)."""
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)
        self.headless = headless
        self.uuid_for = uuid_for or (lambda profile_id: profile_id)
        self.extra_start = dict(extra_start or {})
        self._by_uuid: dict[str, str] = {}  # Octo uuid → Tether profile_id, for `running()`

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise LaunchError(f"OctoBrowser's local API at {self.http.base_url} did not answer: {exc}") from None
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = {"error": response.text[:200]}
        if isinstance(data, dict) and "data" in data and ("success" in data or "error" in data):
            if data.get("success") is False or (data.get("error") and response.status_code >= 400):
                return max(response.status_code, 400), data
            data = data["data"]
        return response.status_code, data

    def launch(self, profile_id: str, assignment: Assignment) -> BrowserInfo:
        uuid = self.uuid_for(profile_id)
        self._by_uuid[uuid] = profile_id
        status, data = self._call(
            "POST", "/api/profiles/start",
            {"uuid": uuid, "headless": self.headless, "debug_port": True, **self.extra_start},
        )
        if status >= 400 or not isinstance(data, dict):
            # Already running (a restart of this agent, or a previous take): attach to it instead.
            for item in self._active():
                if item.get("uuid") == uuid:
                    return self._info(profile_id, item)
            raise LaunchError(f"OctoBrowser could not start profile {uuid}: {_message(data)}")
        return self._info(profile_id, data)

    def stop(self, profile_id: str) -> None:
        uuid = self.uuid_for(profile_id)
        status, data = self._call("POST", "/api/profiles/stop", {"uuid": uuid})
        if status >= 400 and uuid in {item.get("uuid") for item in self._active()}:
            raise LaunchError(f"OctoBrowser could not stop profile {uuid}: {_message(data)}")

    def running(self) -> set[str]:
        return {self._by_uuid.get(str(item.get("uuid")), str(item.get("uuid"))) for item in self._active()}

    def _active(self) -> list[dict[str, Any]]:
        status, data = self._call("GET", "/api/profiles/active")
        if status >= 400:
            raise LaunchError(f"OctoBrowser could not list active profiles: {_message(data)}")
        if isinstance(data, dict):
            data = data.get("profiles") or data.get("results") or []
        return [item for item in data or [] if isinstance(item, dict) and item.get("uuid")]

    @staticmethod
    def _info(profile_id: str, data: dict[str, Any]) -> BrowserInfo:
        port = data.get("debug_port")
        try:
            debug_port = int(port) if port not in (None, "", True, False) else None
        except (TypeError, ValueError):
            debug_port = None
        pid = data.get("browser_pid")
        return BrowserInfo(
            profile_id=profile_id, ws_endpoint=data.get("ws_endpoint"), debug_port=debug_port,
            pid=pid if isinstance(pid, int) else None, raw=data,
        )


def _message(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("error", "msg", "message", "detail"):
            if data.get(key):
                return str(data[key])[:200]
    return str(data)[:200]
