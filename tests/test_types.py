"""The type checker (pyproject.toml's [tool.mypy]) passes over the package. `make lint` runs it
too; this test keeps it in `make test`, which is what CI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_type_checks():
    mypy = Path(sys.executable).parent / "mypy"
    assert mypy.exists(), f"{mypy} missing: install the dev extra (pip install -e '.[dev]')"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        # no cache: parallel test workers and other checkouts would share it
        [str(mypy), "--no-incremental", "--cache-dir", os.devnull],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mypy:\n{proc.stdout}\n{proc.stderr}"
