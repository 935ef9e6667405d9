"""Shared by the dashboard's benchmark and screenshot scripts (not collected by pytest): a scratch
PostgreSQL database of their own, Django set up on it, and a daphne server for a browser."""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.net import wait_for_port  # noqa: E402


def scratch_database(name: str) -> str:
    """Drop and create database `name` beside DATABASE_URL's; return its URL."""
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tether")
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def django_on(database_url: str, *, key_prefix: str) -> dict:
    """Point this process at `database_url` and set Django up; return the env a server needs."""
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        "TETHER_KEY_PREFIX": key_prefix,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return env


class Server:
    """daphne serving Tether (plus static files from the finders) on a loopback port."""

    def __init__(self, env: dict, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full = dict(os.environ, **env, PYTHONPATH=str(REPO))
        daphne = shutil.which("daphne", path=str(Path(sys.executable).parent)) or "daphne"
        self.proc = subprocess.Popen(
            [daphne, "-b", "127.0.0.1", "-p", str(port), "-v", "0", "tests.browser.asgi:application"],
            cwd=REPO, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, self.proc, timeout=90.0)
        except RuntimeError:
            self.stop()
            raise

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
