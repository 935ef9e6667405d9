"""Where a failed event stream tells its client to resume (in process, the failure injected)."""

import secrets

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import OperationalError

from dashboard import consumers
from tests.dashboard.events_support import closed_with, session_cookie_for, ws_connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis]



@pytest.fixture
async def viewer_headers(transactional_db):
    name = f"resume-watcher-{secrets.token_hex(4)}"
    user = await database_sync_to_async(get_user_model().objects.create_user)(username=name, password=None)
    return await database_sync_to_async(session_cookie_for)(user)


def _broken(*args, **kwargs):
    raise OperationalError("the database went away")


async def test_a_stream_that_fails_before_it_began_says_resume_from_now_not_from_0(monkeypatch, viewer_headers):
    """Failed before anything was read for it: `since` is none (from now), never 0, which would replay
    the whole log to a client that asked for the events from now on. (A client's own `since` is
    handed back the same way: the mid-replay test above, on real servers.)"""
    query, since = "", None
    monkeypatch.setattr(consumers, "log_end", _broken)
    monkeypatch.setattr(consumers, "_read_page", _broken)
    communicator = await ws_connect("/assignments/events" + query, headers=viewer_headers)
    try:
        code, messages = await closed_with(communicator)
    finally:
        await communicator.disconnect()
    assert code == consumers.CLOSE_SERVER_ERROR
    assert messages[-1]["type"] == "error" and messages[-1]["since"] == since
