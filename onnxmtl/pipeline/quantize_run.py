"""`onnxmtl quantize`: a run's model (or any exported file) as static INT8, with each task's
test metrics before and after and the two models' latency side by side."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from onnxmtl.benchmark import bench
from onnxmtl.data import MultiTaskDataset, load_dataset, split_indices
from onnxmtl.data.torch_dataset import DataSource
from onnxmtl.errors import ConfigError, ModelFileError, RunFolderError
from onnxmtl.exporter.onnx_export import read_metadata
from onnxmtl.io_utils import atomic_write_text, read_json
from onnxmtl.pipeline.run_folders import writing
from onnxmtl.quantize import DEFAULT_TOLERANCE, quantize_model
from onnxmtl.run_folder import PipelineFolder
from onnxmtl.tasks import Task
from onnxmtl.training import SearchConfig


def quantize(
    target: str | Path,
    data: DataSource | None = None,
    model: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    count: int = 64,
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 50,
    threads: int = 0,
) -> dict[str, Any]:
    """Quantise the model `model` (default: the one the run deploys, or the searched one
    where that is several files) of the run folder `target`, calibrated on its training
    images and judged on its test split; or the ONNX file `target` on `data`. Writes
    NAME.int8.onnx beside the model and, for a run, quantize.json; returns what it measured:
    the nodes kept in float, every task's metrics in fp32 and INT8 and their change, and p50
    latency of both at `batch_sizes`."""
    path, source, options, seed, record = _target(Path(target), data, model)
    if not isinstance(source, str | Path):
        raise ConfigError("quantize reads named datasets and dataset folders; give --data.")
    train = load_dataset(source, "train", **options)
    test = load_dataset(source, "test", **options)
    # a run's folder is held (and its file list kept) while the INT8 model is written into it
    with writing(Path(target)) if record is not None else contextlib.nullcontext():
        summary = quantize_file(
            path, train, test, seed, tolerance, count, batch_sizes, repeats, threads
        )
        if record is not None:
            atomic_write_text(record, json.dumps(summary, indent=1))
    return summary


def quantize_file(
    path: Path,
    train: MultiTaskDataset,
    test: MultiTaskDataset,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    count: int = 64,
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 50,
    threads: int = 0,
) -> dict[str, Any]:
    """The exported file `path` as static INT8 (NAME.int8.onnx beside it), calibrated on
    `count` images of `train`'s training part drawn with `seed`, judged on `test`; what
    `quantize` returns."""
    calibration = split_indices(len(train), seed, 0.1, train.val_indices())["train"]
    out = path.with_name(path.stem + ".int8.onnx")
    result = quantize_model(
        path, out, train, test, _tasks(path), np.random.default_rng(seed).permutation(calibration),
        count=count, tolerance=tolerance,
    )  # fmt: skip
    timing = bench({"fp32": path, "int8": out}, batch_sizes, repeats=repeats, memory=False,
                   threads=threads)  # fmt: skip
    return {
        "model": str(path),
        **result.to_dict(),
        "latency_p50_ms": {str(b): timing.p50_ms(b) for b in batch_sizes},
    }


def _target(
    target: Path, data: DataSource | None, model: str | None
) -> tuple[Path, DataSource, dict[str, Any], int, Path | None]:
    """The fp32 file, the data (`data`, or the run's), the dataset's options, the seed, and
    where to record the result."""
    folder = PipelineFolder(target)
    if target.is_dir():
        if not folder.results.exists():
            raise ConfigError(f"{target}: not a finished run (no {folder.results.name}).")
        fix = "the run's results are damaged: run it again with --force."
        results = read_json(folder.results, fix, RunFolderError)
        config = SearchConfig.from_dict(results["config"], str(folder.results))
        deployed = results["deploy"]["model"]
        name = model or (folder.SEARCHED if deployed == "single-task" else deployed)
        path = folder.onnx(name)
        if not path.exists():
            models = ", ".join(sorted(p.stem for p in folder.models.glob("*.onnx")))
            raise ModelFileError(f"{path}: no such model in the run; it has {models}.")
        source = data if data is not None else results["data"]
        return path, source, config.dataset.options, config.runtime.seed, folder.quantize
    if not target.is_file():
        raise ModelFileError(f"{target}: no such ONNX file or run folder.")
    if data is None:
        raise ConfigError(f"{target}: a model file needs --data to calibrate and judge it on.")
    return target, data, {}, 0, None


def _tasks(path: Path) -> list[Task]:
    """The tasks the exporter recorded in the model's metadata."""
    props = read_metadata(path)
    if "onnxmtl.tasks" not in props:
        raise ModelFileError(f"{path}: not exported by onnxmtl (no task list in its metadata).")
    return [Task.from_dict(t) for t in json.loads(props["onnxmtl.tasks"])]


def quantize_table(result: dict[str, Any]) -> str:
    """Each task's fp32 and INT8 metrics with the task's change, then the latency of both."""
    lines = ["| task | metric | fp32 | INT8 | task change % |", "|---|---|---|---|---|"]
    for task, values in result["fp32"].items():
        change = result["deltas"].get(task, float("nan"))
        for metric, value in values.items():
            int8 = result["int8"][task][metric]
            lines.append(f"| {task} | {metric} | {value:.4g} | {int8:.4g} | {change:+.2f} |")
    lines += ["", "| batch | fp32 p50 ms | INT8 p50 ms | speed-up |", "|---|---|---|---|"]
    for batch, p50 in result["latency_p50_ms"].items():
        fp32, int8 = p50["fp32"], p50["int8"]
        lines.append(f"| {batch} | {fp32:.3f} | {int8:.3f} | {fp32 / int8:.2f}x |")
    verdict = "within" if result["within"] else "NOT within"
    lines += [
        "",
        f"wrote {result['path']}: {len(result['excluded'])} node(s) kept in float; every task "
        f"{verdict} {result['tolerance']:g}% of fp32",
    ]
    return "\n".join(lines)
