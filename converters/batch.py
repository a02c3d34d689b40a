"""Run several exports, each timed, one failure not stopping the others (no torch or
TensorFlow import here: both converter scripts use it, each in its own environment)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path


def chosen_names(names: list[str], known: Collection[str], what: str) -> list[str] | None:
    """The names the command line asks for (`all`: every known one); None, after printing
    which are unknown, when some are."""
    picked = list(known) if names == ["all"] else names
    unknown = [n for n in picked if n not in known]
    if unknown:
        print(f"error: unknown {what}(s) {', '.join(unknown)}; --list shows the names")
        return None
    return picked


def run_exports(jobs: dict[str, Callable[[], Path]]) -> int:
    """Run every job, printing its label, seconds and file (or why it failed); 1 if any
    failed, else 0."""
    failed = []
    for label, job in jobs.items():
        start = time.perf_counter()
        try:
            path = job()
        except Exception as exc:  # one failing export must not stop the others
            failed.append(label)
            print(f"{label:36s} FAILED: {type(exc).__name__}: {exc}"[:300])
            continue
        print(f"{label:36s} {time.perf_counter() - start:6.1f}s  {path}")
    if failed:
        print(f"error: {len(failed)} export(s) failed: {', '.join(failed)}")
        return 1
    return 0
