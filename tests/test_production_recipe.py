"""The README's production section and `make serve` agree exactly: the command the README says
`make serve` runs is the one it runs (`make -n` prints it without running anything)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _one_line(command: str) -> str:
    return " ".join(command.replace("\\\n", " ").split())


def test_the_readme_shows_the_command_make_serve_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running on PostgreSQL and Redis"):]
    assert "make serve HOST=0.0.0.0 PORT=8000" in section
    shown = re.search(r"```sh\n((?:PROMETHEUS_MULTIPROC_DIR=\S+ )?TETHER_DB_POOL=1 [^`]*?config\.serve [^`]*?)\n```", section)
    assert shown, "the README's production section no longer shows what make serve runs"
    # The README's figures: 2 workers (one per CPU on this machine) and the default budget.
    planned = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve", "HOST=0.0.0.0", "PORT=8000", "SERVE_WORKERS=2",
         "-o", ".venv/.installed"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    runs = [_one_line(c) for c in re.split(r"(?<!\\)\n", planned) if "config.serve" in c]
    assert runs == [_one_line(shown.group(1))]
