import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, parse_database_url


@pytest.mark.parametrize("raw,expected", [("1", True), ("true", True), ("YES", True), ("off", False), ("0", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG") is expected


@pytest.mark.parametrize("helper,raw", [(env_bool, "maybe"), (env_int, "12x"), (env_int, "-3"), (env_float, "nan"),
                                        (env_float, "fast")])
def test_env_helpers_refuse_bad_values_loudly(monkeypatch, helper, raw):
    monkeypatch.setenv("X_VALUE", raw)
    with pytest.raises(ImproperlyConfigured, match="X_VALUE"):
        helper("X_VALUE", 1, minimum=0) if helper is not env_bool else helper("X_VALUE")


def test_database_url_parsing():
    pg = parse_database_url("postgres://u:p%40ss@db.local:6543/tether?sslmode=require")
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql", "tether", "u", "p@ss", "db.local", "6543")
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert parse_database_url("sqlite:////tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    for bad in ("mysql://x/y", "postgres://host/", "sqlite://"):
        with pytest.raises(ImproperlyConfigured):
            parse_database_url(bad)


def test_production_mode_requires_a_secret_key(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x", "TETHER_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import config.settings"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("mode", ["embedded", "production"])
def test_system_checks_pass_in_a_fresh_process(tmp_path, mode):
    """`manage.py check` imports modules in its own order (the CSRF failure view first, say);
    an import cycle the test run's import order hides shows up here."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": os.environ["PATH"], "TETHER_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    if mode == "production":
        env.update({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "REDIS_URL": "redis://127.0.0.1:6379/0",
                    "SECRET_KEY": "x" * 50})
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", sorted(
    f"config.api.{p.stem}" for p in (__import__("pathlib").Path(__file__).resolve().parents[1] / "config" / "api").glob("*.py")
))
def test_each_api_module_imports_first_in_a_fresh_process(tmp_path, module):
    """Which module Django happens to import first varies (check order follows a set); an import
    cycle must not depend on luck, so each module is imported first in a process of its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": os.environ["PATH"], "TETHER_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    code = f"import django; django.setup(); import {module}"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
