"""Task metrics of an ONNX file run by onnxruntime: how a deployed model is judged, the
same metrics as the trainer's evaluation, on the same batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onnxmtl.data import MultiTaskDataset
from onnxmtl.runtime import session
from onnxmtl.tasks import Task, make_metric
from onnxmtl.training.evaluate import fit_output
from onnxmtl.training.stream import collate

Metrics = dict[str, dict[str, float]]


def evaluate_onnx(
    path: str | Path,
    dataset: MultiTaskDataset,
    tasks: list[Task],
    indices: np.ndarray | None = None,
    batch_size: int = 32,
    max_batches: int | None = None,
    threads: int = 0,
) -> Metrics:
    """Every task's standard metrics of the model in `path` over `indices` of `dataset` (all
    of it by default), its outputs resized to the targets' resolution as in training."""
    ort = session(str(path), ["CPUExecutionProvider"], threads=threads)
    name = ort.get_inputs()[0].name
    outputs = [t.name for t in tasks]
    metrics = {t.name: make_metric(t) for t in tasks}
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    for b, start in enumerate(range(0, len(indices), batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        images, targets = collate(dataset, indices[start : start + batch_size])
        got = ort.run(outputs, {name: images.numpy()})
        for task, pred in zip(tasks, got):
            target = targets[task.name]
            metrics[task.name].update(fit_output(torch.from_numpy(pred), target, task), target)
    return {n: m.compute() for n, m in metrics.items()}
