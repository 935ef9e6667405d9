"""TETHER_HTTPS=1 makes the deployment checks pass; a Content-Security-Policy on every response, and
no inline script for it to allow (issue 10, item 8)."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_HTTPS", "DJANGO_SETTINGS"))}
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tether"),
        **env,
    )
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_tether_https_makes_the_deploy_checks_pass():
    on = _manage("check", "--deploy", "--fail-level", "WARNING", TETHER_HTTPS="1")
    assert on.returncode == 0, on.stdout + on.stderr
    off = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert off.returncode != 0 and "SECURE_SSL_REDIRECT" in off.stdout + off.stderr


def test_tether_https_trusts_the_proxys_scheme_header_and_secures_the_cookies():
    script = ("from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE, "
              "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0)")
    out = _manage("shell", "-c", script, TETHER_HTTPS="1")
    assert out.stdout.strip().splitlines()[-1] == "('HTTP_X_FORWARDED_PROTO', 'https') True True True True", out.stderr


PAGES = ["/tasks/", "/pools/", "/admin/", "/admin/assignments/assignment/", "/admin/pools/agentpool/add/", "/admin/agents/agent/", "/api/docs/", "/", "/agents/", "/history/"]
LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]
ANSWERS = ["/api/pools", "/api/schema/", "/health", "/nothing-here", "/api/nothing-here"] + PAGES
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)


@pytest.fixture
def staff_client(db):
    from django.test import Client

    logged_in = Client()
    logged_in.force_login(User.objects.create_user("sam", is_staff=True, is_superuser=True))
    return logged_in


@pytest.mark.parametrize("path", ANSWERS)
def test_every_answer_carries_a_content_security_policy(staff_client, path):
    response = staff_client.get(path)
    policy = response.get("Content-Security-Policy", "")
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if " " in d.strip())
    assert directives.get("script-src") == "'self'", policy
    assert "unsafe-inline" not in directives.get("style-src", ""), policy
    assert directives.get("frame-ancestors") == "'none'", policy


@pytest.mark.parametrize("path", PAGES + LOGIN_PAGES)
def test_pages_have_no_inline_script_the_policy_would_block(staff_client, client, path):
    response = (client if path in LOGIN_PAGES else staff_client).get(path)
    assert response.status_code == 200, (path, response.status_code)
    html = response.content.decode()
    assert not INLINE_SCRIPT.findall(html), INLINE_SCRIPT.findall(html)


def test_the_docs_pages_one_inline_style_is_the_one_its_policy_allows(client, db):
    import base64
    import hashlib

    from config.api.urls import SWAGGER_STYLE_HASH

    response = client.get("/api/docs/")
    styles = re.findall(r"<style>(.*?)</style>", response.content.decode(), re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert SWAGGER_STYLE_HASH == f"'sha256-{digest}'"
    assert SWAGGER_STYLE_HASH in response["Content-Security-Policy"]
