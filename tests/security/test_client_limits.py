"""Throttling by the real client address, throttled failed authentication, and limited login
attempts (issue 10, item 7)."""

import time

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, RequestFactory, override_settings

from config.api.throttling import CredentialRateThrottle
from config.ratelimit import client_address
from tests.api.conftest import api, assert_error, make_agent, pool, pool_with_token  # noqa: F401 — fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    def clean():
        if hasattr(cache, "delete_pattern"):
            for pattern in ("throttle:*", "ratelimit:*", "axes*"):
                cache.delete_pattern(pattern)
        else:
            cache.clear()

    clean()
    yield
    clean()


def _request(remote="203.0.113.9", forwarded=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


# --- the client's address ---------------------------------------------------------------------------


@override_settings(TETHER_TRUSTED_PROXIES=[])
def test_without_trusted_proxies_x_forwarded_for_is_ignored():
    assert client_address(_request(forwarded="1.2.3.4")) == "203.0.113.9"


@override_settings(TETHER_TRUSTED_PROXIES=["10.0.0.0/8"])
def test_behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client():
    # The client wrote "6.6.6.6" itself; our proxy appended the address it saw.
    assert client_address(_request(remote="10.0.0.2", forwarded="6.6.6.6, 198.51.100.7")) == "198.51.100.7"
    assert client_address(_request(remote="10.0.0.2", forwarded="198.51.100.7, 10.0.0.5")) == "198.51.100.7"
    assert client_address(_request(remote="10.0.0.2", forwarded="garbage")) == "10.0.0.2"
    assert client_address(_request(remote="10.0.0.2")) == "10.0.0.2"
    # A request that did not come through our proxy: its header is the client's own words.
    assert client_address(_request(remote="198.51.100.8", forwarded="1.2.3.4")) == "198.51.100.8"


def test_a_bad_trusted_proxy_setting_stops_the_process(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.env import env_networks

    monkeypatch.setenv("TETHER_TRUSTED_PROXIES", "10.0.0.0/8, not-an-ip")
    with pytest.raises(ImproperlyConfigured):
        env_networks("TETHER_TRUSTED_PROXIES")


# --- the anonymous throttle -------------------------------------------------------------------------


def test_rotating_x_forwarded_for_does_not_get_past_the_anonymous_throttle(api, pool, monkeypatch):
    monkeypatch.setattr(CredentialRateThrottle, "THROTTLE_RATES", {"credential": "3/min"})
    answers = []
    for i in range(5):
        response = api.post("/api/agents/register", {"agent_id": f"x{i}", "pool": pool.name},
                            headers={"X-Enrollment-Token": "enr_wrong", "X-Forwarded-For": f"192.0.2.{i}"})
        answers.append(response.status_code)
    assert answers[:3] == [403, 403, 403]
    assert answers[3:] == [429, 429]


# --- failed authentication --------------------------------------------------------------------------


@override_settings(TETHER_API_AUTH_FAILURE_RATE="3/min")
def test_invalid_tokens_are_throttled_per_client_address(api, make_agent):
    _, good = make_agent("a1")
    for i in range(3):
        assert_error(api.get("/api/pools", token=f"wrong{i}"), 401, "not_authenticated")
    error = assert_error(api.get("/api/pools", token="wrong-again"), 429, "throttled")
    assert error["details"]["retry_after"] >= 1
    # Rotating the header changes nothing; until the window ends, every token from there waits.
    assert_error(api.get("/api/pools", token="wrong", headers={"X-Forwarded-For": "192.0.2.77"}), 429, "throttled")
    assert_error(api.get("/api/pools", token=good), 429, "throttled")
    # Another address is not held up by this one.
    other = Client(REMOTE_ADDR="198.51.100.20")
    assert other.get("/api/pools", HTTP_AUTHORIZATION=f"Token {good}").status_code == 200


# --- login attempts ---------------------------------------------------------------------------------


@pytest.fixture
def olga():
    return User.objects.create_user("olga", password="correct horse battery staple", is_staff=True)


def _login(path, username, password, remote="198.51.100.30"):
    return Client(REMOTE_ADDR=remote).post(path, {"username": username, "password": password})


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_repeated_wrong_passwords_lock_the_account_with_429(olga, path, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert _login(path, "olga", "wrong").status_code == 200  # the form again, with its error
    assert _login(path, "olga", "wrong").status_code == 429
    # Locked: the right password from elsewhere waits too (per account).
    assert _login(path, "olga", "correct horse battery staple", remote="198.51.100.31").status_code == 429


def test_one_address_guessing_many_accounts_is_locked_out_with_429(olga, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for i in range(limit - 1):
        assert _login("/accounts/login/", f"user{i}", "wrong").status_code == 200
    assert _login("/accounts/login/", "someone", "wrong").status_code == 429
    assert _login("/accounts/login/", "olga", "correct horse battery staple").status_code == 429  # per address
    assert _login("/accounts/login/", "olga", "correct horse battery staple", remote="198.51.100.99").status_code == 302


def test_a_successful_login_resets_the_count(olga, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login("/accounts/login/", "olga", "wrong")
    assert _login("/accounts/login/", "olga", "correct horse battery staple").status_code == 302
    assert _login("/accounts/login/", "olga", "wrong").status_code == 200


# --- the token path: the failure check and the throttle in one Redis round trip (issue 15) ---------


@pytest.fixture
def redis_sends(monkeypatch):
    """What the cache's connections sent to Redis (each send is one round trip: a pipeline is sent
    whole), as the commands' bytes; a send the guard refused is not one."""
    from config.redis_guard import GuardedConnection

    sent = []
    original = GuardedConnection.send_packed_command

    def spy(self, command, check_health=True):
        result = original(self, command, check_health)
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))
        return result

    monkeypatch.setattr(GuardedConnection, "send_packed_command", spy)
    return sent


@pytest.fixture
def one_window(monkeypatch):
    """The authentication's and the throttle's clocks stopped in the middle of one minute, so that
    a fixed-window count cannot be split by the wall clock."""
    from config.api import authentication, throttling

    monkeypatch.setattr(authentication, "_now", lambda: 1_800_000_030.0)
    monkeypatch.setattr(throttling, "_now", lambda: 1_800_000_030.0)


def _rate(monkeypatch, rate):
    monkeypatch.setattr(CredentialRateThrottle, "THROTTLE_RATES", {"credential": rate})


@pytest.fixture
def throttle_counts(monkeypatch):
    """The keys the throttle counted itself (it fails open, so a spy that raised would go unseen)."""
    from config.api import throttling

    counted = []
    original = throttling.count

    def spy(key, ttl):
        counted.append(key)
        return original(key, ttl)

    monkeypatch.setattr(throttling, "count", spy)
    return counted


@pytest.mark.redis
def test_an_agent_request_pays_one_redis_round_trip_for_authentication_and_throttle(api, make_agent, redis_sends):
    """Before: a GET of the address's failure window, then the throttle's INCR + EXPIRE — two round
    trips before the view ran. Now one pipeline carries all three."""
    _, token = make_agent("a1")
    api.get("/api/agents/a1", token=token)  # connections open, nothing else to set up
    redis_sends.clear()
    assert api.get("/api/agents/a1", token=token).status_code == 200
    limits = [sent for sent in redis_sends if b"ratelimit:" in sent or b"throttle:" in sent]
    assert len(limits) == 1, redis_sends
    (pipeline,) = limits
    assert b"GET" in pipeline and b"ratelimit:auth-failures:" in pipeline
    assert b"INCRBY" in pipeline and b"EXPIRE" in pipeline and b"throttle:credential:tok:" in pipeline
    # This view reads nothing else from Redis: the whole request is that one round trip.
    assert len(redis_sends) == 1, redis_sends


@pytest.mark.redis
def test_a_session_keeps_its_one_throttle_count_by_user(olga, pool, redis_sends):
    client = Client()
    client.force_login(olga)
    assert client.get("/api/pools").status_code == 200
    limits = [sent for sent in redis_sends if b"ratelimit:" in sent or b"throttle:" in sent]
    assert len(limits) == 1 and b"throttle:credential:user:" in limits[0], redis_sends


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "in-process cache"])
def test_one_token_past_its_rate_gets_429_with_retry_after(
    api, make_agent, monkeypatch, one_window, settings, throttle_counts, redis
):
    if not redis:
        settings.REDIS_URL = None  # the embedded mode's path: the cache's own calls
    elif not settings.TEST_ON_REDIS:
        pytest.skip("needs Redis")
    _rate(monkeypatch, "3/min")
    _, token = make_agent("a1")
    codes = [api.get("/api/agents", token=token).status_code for _ in range(4)]
    response = api.get("/api/agents", token=token)
    assert codes == [200, 200, 200, 429]
    assert throttle_counts == []  # the authentication counted each request, the throttle none
    error = assert_error(response, 429, "throttled")
    assert response["Retry-After"] == "30"
    assert error["details"]["retry_after"] == 30


def test_a_re_registered_agent_gets_a_fresh_bucket_and_its_old_token_401(api, make_agent, monkeypatch, one_window):
    _rate(monkeypatch, "3/min")
    _, old = make_agent("a1")
    assert [api.get("/api/agents", token=old).status_code for _ in range(4)] == [200, 200, 200, 429]
    _, new = make_agent("a1")  # registering again re-keys the agent
    assert_error(api.get("/api/agents", token=old), 401, "not_authenticated")
    assert [api.get("/api/agents", token=new).status_code for _ in range(3)] == [200, 200, 200]
    assert_error(api.get("/api/agents", token=new), 429, "throttled")


@override_settings(TETHER_API_AUTH_FAILURE_RATE="3/min")
def test_an_address_past_its_failures_gets_429_before_any_lookup(api, make_agent, django_assert_num_queries):
    _, good = make_agent("a1")
    for i in range(3):
        assert_error(api.get("/api/pools", token=f"wrong{i}"), 401, "not_authenticated")
    with django_assert_num_queries(0):
        assert_error(api.get("/api/pools", token=good), 429, "throttled")
        assert_error(api.get("/api/pools", token="agt_guess"), 429, "throttled")


@pytest.mark.redis
@pytest.mark.parametrize("failure", ["connection", "backing-off"])
def test_when_the_round_trip_fails_the_request_goes_through_without_a_second_one(
    api, make_agent, monkeypatch, redis_sends, throttle_counts, failure
):
    from redis.client import Pipeline
    from redis.exceptions import ConnectionError as RedisConnectionError

    from config import redis_guard

    _rate(monkeypatch, "1/min")
    _, token = make_agent("a1")
    if failure == "connection":
        def refuse(self, *args, **kwargs):
            raise RedisConnectionError("Redis is down")

        monkeypatch.setattr(Pipeline, "execute", refuse)
    else:
        monkeypatch.setattr(redis_guard, "_skip_until", time.monotonic() + 60)
    redis_sends.clear()
    assert [api.get("/api/agents/a1", token=token).status_code for _ in range(3)] == [200, 200, 200]
    assert redis_sends == [] and throttle_counts == []  # the failed pipeline was each request's only try
