"""The static checks of `make lint` that CI must see too (it runs only `make test`): the
layers contract (pyproject.toml's [tool.importlinter]: no stage imports a later one) and the
type checker (its [tool.mypy])."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """The dev extra's command-line tool `name` run on this checkout."""
    tool = Path(sys.executable).parent / name
    assert tool.exists(), f"{tool} missing: install the dev extra (pip install -e '.[dev]')"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [str(tool), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_stages_import_only_earlier_stages():
    proc = run_tool("lint-imports", "--no-cache", "--no-logo", "pyproject.toml")
    assert proc.returncode == 0, f"import-linter:\n{proc.stdout}\n{proc.stderr}"


def test_package_type_checks():
    # no cache: parallel test workers and other checkouts would share it
    proc = run_tool("mypy", "--no-incremental", "--cache-dir", os.devnull)
    assert proc.returncode == 0, f"mypy:\n{proc.stdout}\n{proc.stderr}"
