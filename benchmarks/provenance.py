"""Where a benchmark's result came from: the command, the commit (and whether the tree had
uncommitted changes), the machine and the time, recorded beside every result file."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()


def provenance(script: str, threads: str) -> dict[str, object]:
    """The record of this invocation of benchmarks/`script`; `threads` says in words how
    many threads its work ran on."""
    import torch

    return {
        "command": shlex.join([".venv/bin/python", f"benchmarks/{script}", *sys.argv[1:]]),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{threads}",
        "written": now(),
    }


def now() -> str:
    """The time a record is written, as every record gives it."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
