"""Helpers for the event stream tests: a WebSocket client on the real ASGI application (channels'
WebsocketCommunicator; the channel layer is Redis when REDIS_URL is set) and changes made through
the services on their own connections."""

import asyncio
import json

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from assignments.models import Event
from assignments.services import profile_create
from config.actors import Actor

OPERATOR = Actor.system("test-operator")


def application():
    from config.asgi import application as app

    return app


async def ws_connect(path="/assignments/events", *, headers=None, app=None):
    """An accepted connection (refused ones are accepted, sent an error and closed: see the consumer)."""
    communicator = WebsocketCommunicator(app or application(), path, headers=headers or [])
    connected, _ = await communicator.connect(timeout=5)
    assert connected, "the handshake was not accepted"
    return communicator


async def closed_with(communicator, timeout=3) -> tuple[int, list[dict]]:
    """Read until the server closes: (close code, the messages sent before)."""
    messages = []
    while True:
        output = await communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output.get("code"), messages
        messages.append(json.loads(output["text"]))


async def receive_events(communicator, n, timeout=5) -> list[dict]:
    out = []
    for _ in range(n):
        out.append(await communicator.receive_json_from(timeout))
    return out


async def nothing_more(communicator, wait=0.4) -> bool:
    return await communicator.receive_nothing(timeout=wait, interval=0.02)


def last_seq() -> int:
    return Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def make_profiles(prefix: str, n: int, **fields) -> list[int]:
    """n changes (`profile.created`), each in its own transaction; returns their seqs."""
    for i in range(n):
        profile_create(profile_id=f"{prefix}-{i}", actor=OPERATOR, **fields)
    return list(Event.objects.filter(profile_id__startswith=f"{prefix}-").order_by("seq").values_list("seq", flat=True))


async def amake_profiles(prefix: str, n: int, **fields) -> list[int]:
    return await database_sync_to_async(make_profiles)(prefix, n, **fields)


def session_cookie_for(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = "; ".join(f"{k}={v.value}" for k, v in client.cookies.items())
    return [(b"cookie", cookie.encode())]


async def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)
