"""The layers of DESIGN.md ("Architecture"), checked on the code itself (docs/architecture.md).

- `lint-imports` (import-linter, contract in `.importlinter`) keeps imports pointing one way;
- every module of the project sits in one of the contract's layers (a new module cannot slip past);
- no project import hides inside a function (where import-linter still sees it, but where it used to
  hide import cycles);
- and the contract does fail on a lower layer importing a higher one (checked on a copy of the code).
"""

import ast
import shutil
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "assignments", "pools", "agents", "dashboard")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )


def test_the_layer_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def _layers() -> list[list[str]]:
    parser = ConfigParser()
    parser.read(ROOT / ".importlinter")
    lines = [line.strip() for line in parser["importlinter:contract:layers"]["layers"].splitlines() if line.strip()]
    return [[name.strip() for name in line.replace("|", ":").split(":")] for line in lines]


def test_every_module_is_in_a_layer():
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    listed = [name for layer in _layers() for name in layer]
    # Packages whose own __init__ holds nothing but wiring (config/__init__ loads the Celery app).
    containers = set(PACKAGES) | {f"{p}.api" for p in ("assignments", "pools", "agents")} | {"config.api"}
    outside = sorted(
        module for module in graph.modules
        if module not in containers
        and not any(module == name or module.startswith(name + ".") for name in listed)
    )
    assert outside == [], f"modules in no layer of .importlinter: {outside}"


def _function_level_project_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.ImportFrom):
                names = [inner.module or ""] if inner.level == 0 else ["." * inner.level]
            elif isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            for name in names:
                if name.startswith(".") or name.split(".")[0] in PACKAGES:
                    found.append(f"{path.relative_to(root)}:{inner.lineno} imports {name} inside {node.name}()")
    return sorted(set(found))


def test_no_project_import_hides_inside_a_function():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found += _function_level_project_imports(path)
    assert found == []


def test_the_checks_catch_a_lower_layer_importing_a_higher_one(tmp_path):
    """The contract is not vacuous: the event log importing the dashboard (as it once did) breaks it,
    and a hidden import inside a function is reported."""
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / ".importlinter", copy / ".importlinter")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    events = copy / "assignments" / "events.py"
    events.write_text(events.read_text() + "\n\ndef _publish():\n    from dashboard.publish import publish_events\n\n    return publish_events\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "assignments.events -> dashboard.publish" in result.stdout
    (hidden,) = _function_level_project_imports(events, root=copy)
    assert hidden.startswith("assignments/events.py:") and hidden.endswith("imports dashboard.publish inside _publish()")


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_cleanly_in_a_fresh_process(package):
    """No import order hides a cycle: each package's modules import on their own."""
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings'); django.setup();"
        "import importlib, pkgutil, sys;"
        f"pkg = importlib.import_module({package!r});"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')"
        " if '.migrations' not in m.name and not m.name.endswith('.asgi') and not m.name.endswith('.wsgi')]"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
