"""Evaluation with the task metrics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onnxmtl.compiler import Policy, SuperModel
from onnxmtl.data import MultiTaskDataset
from onnxmtl.tasks import Task, make_metric
from onnxmtl.training.stream import collate


def fit_input(images: torch.Tensor, model: SuperModel) -> torch.Tensor:
    """Images resized to the backbone's fixed input size where they differ."""
    size = tuple(int(d) for d in model.graph.input_shape[2:])  # H, W: concrete once loaded
    if tuple(images.shape[2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


def fit_output(pred: torch.Tensor, target: torch.Tensor, task: Task) -> torch.Tensor:
    """A dense prediction resized to its target's resolution."""
    if task.dense and pred.dim() == 4 and pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return pred


@torch.no_grad()
def evaluate(
    model: SuperModel,
    dataset: MultiTaskDataset,
    indices: np.ndarray | None = None,
    batch_size: int = 64,
    mode: str = "fixed",
    max_batches: int | None = None,
    policy: Policy | None = None,
) -> dict[str, dict[str, float]]:
    """Every task's standard metrics over `indices` of `dataset` (all of it by default); in
    'fixed' mode under `policy` (default: the one the model carries)."""
    was_training = model.training
    model.eval()
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    metrics = {t.name: make_metric(t) for t in model.tasks}
    device = next(model.parameters()).device
    try:
        for b, start in enumerate(range(0, len(indices), batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            images, targets = collate(dataset, indices[start : start + batch_size])
            out = model(fit_input(images.to(device), model), mode=mode, policy=policy)
            for task in model.tasks:
                target = targets[task.name]
                metrics[task.name].update(fit_output(out[task.name], target, task).cpu(), target)
    finally:
        model.train(was_training)
    return {name: m.compute() for name, m in metrics.items()}
