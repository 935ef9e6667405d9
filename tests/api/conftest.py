"""Fixtures for the REST API tests: credentials of every kind and a JSON client."""

import json as jsonlib

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.authtoken.models import Token

from agents.services import agent_register
from assignments.services import profile_create
from config.actors import OPERATORS_GROUP, Actor
from pools.services import pool_create

SYSTEM = Actor.system("test-setup")


class Api:
    """A thin JSON client: `api.post("/api/x", {"a": 1}, token=...)` → response with `.json()`."""

    def __init__(self):
        self.client = Client()

    def request(self, method, path, body=None, *, token=None, raw=None, content_type="application/json", headers=None):
        extra = {}
        if token:
            extra["HTTP_AUTHORIZATION"] = f"Token {token}"
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        data = raw if raw is not None else (jsonlib.dumps(body) if body is not None else "")
        return self.client.generic(method, path, data, content_type=content_type, **extra)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, body=None, **kw):
        return self.request("DELETE", path, body, **kw)


def assert_error(response, status, code):
    """The one error shape, with the expected status and code."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def api():
    return Api()


@pytest.fixture
def pool_with_token(db):
    return pool_create(name="k8s-prod", actor=SYSTEM, platform="kubernetes", region="eu")


@pytest.fixture
def pool(pool_with_token):
    return pool_with_token[0]


@pytest.fixture
def enrollment_token(pool_with_token):
    return pool_with_token[1]


@pytest.fixture
def operator_token(db):
    user = User.objects.create_user("olga", password=None)
    user.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
    return Token.objects.create(user=user).key


@pytest.fixture
def staff_token(db):
    user = User.objects.create_user("sam", password=None, is_staff=True)
    return Token.objects.create(user=user).key


@pytest.fixture
def user_token(db):
    user = User.objects.create_user("una", password=None)
    return Token.objects.create(user=user).key


@pytest.fixture
def make_agent(pool):
    def make(agent_id, *, in_pool=None, **fields):
        fields.setdefault("capacity", 4)
        agent, token = agent_register(pool=in_pool or pool, agent_id=agent_id, actor=SYSTEM, **fields)
        return agent, token

    return make


@pytest.fixture
def make_profile(pool):
    def make(profile_id, **fields):
        return profile_create(profile_id=profile_id, actor=SYSTEM, **fields)

    return make
