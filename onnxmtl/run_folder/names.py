"""The names of every file onnxmtl writes into a run folder, in one place.

`RunFolder` is one training run's folder (a search, a baseline, or one task's folder of the
single-task baseline); `PipelineFolder` is the folder `onnxmtl.run` fills, which holds such
folders. Code that reads or writes a run's file asks these objects for its path. Which files
--force may delete is not judged by these names but by the folder's file list
(`onnxmtl.run_folder.ownership`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

RUN_FILE = "run.json"  # what makes a folder a run (`is_run`)
LOCK_FILE = ".onnxmtl.lock"


@dataclass(frozen=True)
class RunFolder:
    """A training run's folder and the path of each of its files."""

    path: Path

    BACKBONE: ClassVar[str] = "backbone.onnx"  # a PyTorch module given as the backbone
    CONFIG: ClassVar[str] = "config.json"
    CHECKPOINT: ClassVar[str] = "checkpoint.pt"
    INITIAL: ClassVar[str] = "initial.pt"  # the starting weights, for post_train_init 'backbone'
    METRICS: ClassVar[str] = "metrics.json"
    LOGS: ClassVar[dict[str, str]] = {"jsonl": "metrics.jsonl", "csv": "metrics.csv"}
    POLICY: ClassVar[str] = "policy.json"
    SUPERMODEL: ClassVar[str] = "supermodel.pt"
    COST_REPORT: ClassVar[str] = "latency.json"
    CONFLICT: ClassVar[str] = "conflict.json"
    SELECTION: ClassVar[str] = "selection.json"  # derive 'halving': what was measured

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def backbone(self) -> Path:
        return self.path / self.BACKBONE

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def initial(self) -> Path:
        return self.path / self.INITIAL

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    def log(self, log_format: str = "jsonl") -> Path:
        """The per-step log in `log_format` ('jsonl' or 'csv')."""
        return self.path / self.LOGS[log_format]

    @property
    def logs(self) -> list[Path]:
        """The per-step log in every format (a fresh run deletes them all)."""
        return [self.path / name for name in self.LOGS.values()]

    @property
    def policy(self) -> Path:
        return self.path / self.POLICY

    @property
    def supermodel(self) -> Path:
        return self.path / self.SUPERMODEL

    @property
    def cost_report(self) -> Path:
        """What the cost model predicts for the derived policy (`CostModel.write_report`)."""
        return self.path / self.COST_REPORT

    @property
    def conflict(self) -> Path:
        return self.path / self.CONFLICT

    @property
    def selection(self) -> Path:
        return self.path / self.SELECTION

    def task(self, name: str) -> RunFolder:
        """The folder of task `name` in a single-task baseline's folder."""
        return RunFolder(self.path / name)

    def tasks(self) -> list[RunFolder]:
        """The task folders that hold a supermodel (a finished single-task baseline's)."""
        return [RunFolder(p.parent) for p in sorted(self.path.glob(f"*/{self.SUPERMODEL}"))]

    def has_checkpoint(self) -> bool:
        """Whether this folder, or one of its task folders, holds a checkpoint."""
        return self.checkpoint.exists() or any(self.path.glob(f"*/{self.CHECKPOINT}"))


@dataclass(frozen=True)
class PipelineFolder:
    """The folder `onnxmtl.run` fills: the search's and the baselines' run folders, the
    exported models, the results, the report and its plots."""

    path: Path

    RESULTS: ClassVar[str] = "results.json"
    TIMES: ClassVar[str] = "run_times.json"  # seconds of each call of `run` on the folder
    REPORT: ClassVar[str] = "report.md"
    PLOTS: ClassVar[tuple[str, ...]] = ("policy.png", "latency.png", "search_curves.png")
    SEARCH: ClassVar[str] = "search"
    BASELINES: ClassVar[str] = "baselines"
    MODELS: ClassVar[str] = "models"
    SEARCHED: ClassVar[str] = "searched"  # the searched model's name among the models
    QUANTIZE: ClassVar[str] = "quantize.json"  # what `onnxmtl quantize` measured

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def backbone(self) -> Path:
        return self.path / RunFolder.BACKBONE

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS

    @property
    def times(self) -> Path:
        return self.path / self.TIMES

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def quantize(self) -> Path:
        return self.path / self.QUANTIZE

    def plot(self, name: str) -> Path:
        """The plot `name` ('policy', 'latency' or 'search_curves')."""
        path = self.path / f"{name}.png"
        if path.name not in self.PLOTS:
            raise KeyError(f"no plot {name!r}; the report has {', '.join(self.PLOTS)}")
        return path

    @property
    def search(self) -> RunFolder:
        return RunFolder(self.path / self.SEARCH)

    def baseline(self, name: str) -> RunFolder:
        return RunFolder(self.path / self.BASELINES / name)

    @property
    def models(self) -> Path:
        return self.path / self.MODELS

    def onnx(self, name: str) -> Path:
        """The exported ONNX file of model `name` ('searched', a baseline's name, 'single-TASK')."""
        return self.models / f"{name}.onnx"

    @property
    def derived(self) -> Path:
        """The searched model as a derived PyTorch model (`save_derived`)."""
        return self.models / f"{self.SEARCHED}.pt"
