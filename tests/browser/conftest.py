"""Browser tests: headless Chromium (Debian's package) driven by Playwright, against a real ASGI
server (daphne, in a subprocess) that uses this test run's database and Redis.

pytest-django's live_server is WSGI only; the dashboard needs WebSockets, so the server is daphne.
It shares the test database (tests here are transactional, so what they write is committed and
visible to it), SECRET_KEY and the channel-layer prefix (so events published by either process reach
the other's subscribers).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.net import free_port, wait_for_port

CHROMIUM = os.environ.get("TETHER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PORT = int(os.environ.get("TETHER_TEST_BROWSER_PORT") or free_port())
REPO = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("TETHER_TEST_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not settings.TEST_ON_POSTGRES:
        return "browser tests share the test database with a server process: needs PostgreSQL"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason is None:
        return
    if REQUIRE and settings.TEST_ON_POSTGRES:
        return  # CI: a missing browser is a failure (the tests error out), never a silent skip
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker):
    db = settings.DATABASES["default"]
    url = f"postgres://{quote(db['USER'] or '')}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    if db.get("PASSWORD"):
        url = f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'])}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "SECRET_KEY": settings.SECRET_KEY,
        "TETHER_KEY_PREFIX": settings.TETHER_KEY_PREFIX,
        "PYTHONPATH": str(REPO),
        "TETHER_TEST_REQUIRE_SERVICES": "",
    })
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    log = tempfile.NamedTemporaryFile(prefix="tether-daphne-", suffix=".log", delete=False)
    daphne = shutil.which("daphne", path=str(Path(sys.executable).parent)) or "daphne"
    proc = subprocess.Popen(
        [daphne, "-b", "127.0.0.1", "-p", str(PORT), "-v", "0", "tests.browser.asgi:application"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(PORT, proc, timeout=90.0, log_tail=lambda: Path(log.name).read_text()[-3000:])
        yield f"http://127.0.0.1:{PORT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        os.unlink(log.name)


@pytest.fixture
def browser(transactional_db, asgi_server, monkeypatch):
    """A headless Chromium. Playwright's sync API keeps an event loop in this thread, which makes
    Django refuse ORM calls as "async": the test itself is plain synchronous code, so allow them."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def wait_until(page, expression: str, *, timeout: int) -> None:
    """Wait (at most `timeout` ms) until the JavaScript `expression` is true in `page`.

    Instead of Playwright's `wait_for_function` with a string, which Chromium eval's inside the
    page — and the pages' Content-Security-Policy (script-src 'self') rightly refuses that. Polled
    from here with `evaluate`, which the policy does not govern."""
    import time

    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} ms: {expression}")
        time.sleep(0.02)
