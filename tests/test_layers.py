"""The layers contract (pyproject.toml's [tool.importlinter]): no stage imports a later one.
`make lint` runs it too; this test keeps it in `make test`, which is what CI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stages_import_only_earlier_stages():
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), f"{lint} missing: install the dev extra (pip install -e '.[dev]')"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [str(lint), "--no-cache", "--no-logo", "pyproject.toml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"import-linter:\n{proc.stdout}\n{proc.stderr}"
