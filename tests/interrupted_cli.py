"""`python tests/interrupted_cli.py N ARGS...`: the onnxmtl CLI with ARGS, interrupted (as by
Ctrl-C) at the Nth training step of every process: a run killed part-way, to resume."""

from __future__ import annotations

import sys

from onnxmtl.cli import main
from onnxmtl.training.trainer import Trainer

_run_step = Trainer._run_step
_steps = {"done": 0}


def _dies_at_step(self: Trainer) -> dict:
    _steps["done"] += 1
    if _steps["done"] == int(sys.argv[1]):
        raise KeyboardInterrupt
    return _run_step(self)


if __name__ == "__main__":
    Trainer._run_step = _dies_at_step
    sys.exit(main(sys.argv[2:]))
