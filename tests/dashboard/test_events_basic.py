"""The stream in whatever mode the suite runs: embedded (SQLite, in-memory channel layer) as well as
PostgreSQL and Redis. The thorough tests, which need the real services, are the other test_events_*."""

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from tests.dashboard.events_support import amake_profiles, last_seq, nothing_more, receive_events, session_cookie_for, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)


async def test_subscriber_gets_live_changes_and_a_replay_in_any_running_mode():
    user = await database_sync_to_async(get_user_model().objects.create_user)(username="basic", password=None)
    headers = await database_sync_to_async(session_cookie_for)(user)
    start = await database_sync_to_async(last_seq)()
    live = await ws_connect(headers=headers)
    seqs = await amake_profiles("basic", 3)
    assert [e["seq"] for e in await receive_events(live, 3)] == seqs
    replay = await ws_connect(f"/assignments/events?since={start}&types=profile.created", headers=headers)
    assert [e["seq"] for e in await receive_events(replay, 3)] == seqs
    assert await nothing_more(replay) and await nothing_more(live)
    await live.disconnect()
    await replay.disconnect()
