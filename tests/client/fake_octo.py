"""A small fake of OctoBrowser's local client API, on loopback, for the launcher's tests: the three
endpoints `OctoLauncher` uses, answering in the shapes of Octo's documentation (see
tether_client/launchers/octo.py). It records what it was asked, and a test may start a profile
behind the SDK's back (`start_out_of_band`)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOcto:
    def __init__(self) -> None:
        self.running: dict[str, dict] = {}
        self.calls: list[tuple[str, str, dict | None]] = []
        self.lock = threading.Lock()
        self._next_port = 51000
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.calls.append(("GET", self.path, None))
                if self.path == "/api/profiles/active":
                    with fake.lock:
                        return self._reply(200, list(fake.running.values()))
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.calls.append(("POST", self.path, body))
                uuid = body.get("uuid")
                if self.path == "/api/profiles/start":
                    if not uuid:
                        return self._reply(400, {"error": "uuid is required"})
                    with fake.lock:
                        if uuid in fake.running:
                            return self._reply(400, {"error": "Profile is already started"})
                        fake.running[uuid] = fake._profile(uuid, headless=bool(body.get("headless")),
                                                           debug=bool(body.get("debug_port")))
                        return self._reply(200, fake.running[uuid])
                if self.path == "/api/profiles/stop":
                    with fake.lock:
                        if fake.running.pop(uuid, None) is None:
                            return self._reply(400, {"error": "Profile is not running"})
                    return self._reply(200, {"msg": "Profile stopped"})
                self._reply(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _profile(self, uuid: str, *, headless: bool, debug: bool) -> dict:
        self._next_port += 1
        port = self._next_port
        return {
            "uuid": uuid, "state": "STARTED", "headless": headless, "start_time": int(time.time()),
            "ws_endpoint": f"ws://127.0.0.1:{port}/devtools/browser/{uuid}-fake" if debug else "",
            "debug_port": str(port) if debug else "", "one_time": False, "browser_pid": 40000 + port,
        }

    def start_out_of_band(self, uuid: str) -> None:
        with self.lock:
            self.running[uuid] = self._profile(uuid, headless=True, debug=True)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
