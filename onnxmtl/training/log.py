"""`MetricsLog`: one row per training step in the run folder (metrics.jsonl or metrics.csv),
and the same rows in memory as the run's history."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from typing import Any

from onnxmtl.compiler import BRANCHES
from onnxmtl.errors import OutputError
from onnxmtl.io_utils import atomic_write_text, note_write
from onnxmtl.run_folder import RunFolder
from onnxmtl.tasks import Task
from onnxmtl.training import distributed


class MetricsLog:
    """Appends each step's row to the run folder's log in `log_format` ('jsonl' or 'csv');
    only the process that writes files (`main`) writes it."""

    def __init__(self, folder: RunFolder, log_format: str, tasks: list[Task], main: bool) -> None:
        self.path = folder.log(log_format)
        self.csv = log_format == "csv"
        self.tasks, self.main = tasks, main
        self.history: list[dict[str, Any]] = []

    def write(self, phase: str, step: int, record: dict[str, float]) -> None:
        """Log `record` as step `step` (counted from 1) of phase `phase`."""
        row = {"phase": phase, "step": step, "time": time.time(), **record}
        self.history.append(row)
        if not self.main:
            return
        note_write(self.path)
        if not self.csv:
            self._append(json.dumps(row) + "\n")
            return
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self._fields(), extrasaction="ignore")
        if not self.path.exists():
            writer.writeheader()
        writer.writerow(row)
        self._append(text.getvalue())

    def _append(self, text: str) -> None:
        """Append `text` whole or not at all: a write the disk refuses is cut back to the last
        whole row and becomes one OutputError naming the log."""
        data = text.encode()
        with open(self.path, "ab", buffering=0) as f:
            start = f.tell()
            try:
                done = 0
                while done < len(data):
                    done += f.write(data[done:]) or 0
            except OSError as exc:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise OutputError(
                    f"{self.path}: cannot write ({exc.strerror or exc}); free space and resume "
                    "the run (--resume) from its last checkpoint."
                ) from exc

    def _fields(self) -> list[str]:
        """The CSV columns: every field a row of any phase may hold."""
        fields = ["phase", "step", "time", "loss", *(f"loss_{t.name}" for t in self.tasks)]
        fields += ["lr", "tau", "policy_lr", "policy_loss", "sharing", "cost", "latency_ms"]
        fields += ["grad_task", "grad_sharing", "grad_cost", "grad_task_share"]
        return fields + [f"p_{b}" for b in BRANCHES]

    def truncate(self, lines: int) -> None:
        """On resume: keep the first `lines` rows (those the checkpoint had logged; the rest
        will be written again) in the file and as the history."""
        if not self.path.exists():
            return
        rows = self.path.read_text().splitlines(keepends=True)
        header = 1 if self.csv else 0
        distributed.barrier()  # every process reads the log before rank 0 cuts it
        if self.main:
            atomic_write_text(self.path, "".join(rows[: header + lines]))
        if self.csv:
            self.history = list(csv.DictReader(rows[: header + lines]))
        else:
            self.history = [json.loads(r) for r in rows[:lines]]
