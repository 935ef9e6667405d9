"""WebSocket routes (served by config/asgi.py), and the guard every WebSocket passes first.

`close_on_error`: a WebSocket whose handling fails before or outside its consumer (the credential
lookup while the database is away, say) is accepted, sent an error and closed with 4500, so that its
client reconnects: never a 500 answer to the handshake, never an open socket nobody writes to.
"""

import contextlib
import json
import logging

from django.urls import path, re_path

from dashboard.consumers import CLOSE_SERVER_ERROR, EventStreamConsumer, UnknownStreamConsumer

log = logging.getLogger(__name__)

websocket_urlpatterns = [
    path("assignments/events", EventStreamConsumer.as_asgi()),
    re_path(r"", UnknownStreamConsumer.as_asgi()),  # anything else: 4404, not a 500
]


def close_on_error(app):
    async def guarded(scope, receive, send):
        state = {"accepted": False, "closed": False}

        async def tracked_send(message):
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] in ("websocket.close", "websocket.http.response.start"):
                state["closed"] = True
            await send(message)

        try:
            return await app(scope, receive, tracked_send)
        except Exception:
            log.exception("WebSocket %s failed", scope.get("path"))
            if state["closed"]:
                return
            with contextlib.suppress(Exception):
                if not state["accepted"]:
                    await send({"type": "websocket.accept"})
                error = {"code": "server_error", "message": "the server failed; reconnect"}
                await send({"type": "websocket.send", "text": json.dumps({"type": "error", "error": error})})
                await send({"type": "websocket.close", "code": CLOSE_SERVER_ERROR})

    return guarded
