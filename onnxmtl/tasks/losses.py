"""Default losses per task kind, and a registry of named losses for task configs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxmtl.errors import ConfigError
from onnxmtl.tasks.task import LossFn, Task


def dense_target(target: torch.Tensor) -> torch.Tensor:
    """A (N, H, W) depth map as (N, 1, H, W); other shapes unchanged."""
    return target.unsqueeze(1) if target.dim() == 3 else target


def depth_valid(target: torch.Tensor) -> torch.Tensor:
    """Pixels with a measured depth: positive and finite (0 marks a missing reading)."""
    return torch.isfinite(target) & (target > 0)


def normals_valid(target: torch.Tensor) -> torch.Tensor:
    """(N, H, W) pixels whose ground-truth normal is a non-zero vector."""
    return target.abs().sum(dim=1) > 0


def cross_entropy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = -100):
    return F.cross_entropy(pred, target.long(), ignore_index=ignore_index)


def masked_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over pixels with a valid depth."""
    target = dense_target(target)
    valid = depth_valid(target)
    if not valid.any():
        return pred.sum() * 0.0
    return (pred[valid] - target[valid]).abs().mean()


def cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity between predicted and true normals, over valid pixels."""
    valid = normals_valid(target)
    if not valid.any():
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
    return (1.0 - cos[valid]).mean()


def bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target.to(pred.dtype).reshape(pred.shape))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target.to(pred.dtype).reshape(pred.shape))


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "masked_l1": masked_l1,
    "cosine": cosine,
    "bce": bce,
    "mse": mse,
    "l1": l1,
}
DEFAULT_LOSS = {
    "segmentation": "cross_entropy",
    "depth": "masked_l1",
    "normals": "cosine",
    "classification": "cross_entropy",
    "multilabel": "bce",
    "regression": "mse",
}


def loss_fn(task: Task) -> LossFn:
    """The callable computing `task`'s loss from (prediction, target)."""
    if callable(task.loss):
        return task.loss
    name = task.loss or DEFAULT_LOSS[task.kind]
    if name not in LOSSES:
        raise ConfigError(
            f"task '{task.name}': unknown loss {name!r}; expected one of {', '.join(LOSSES)} "
            "or a callable."
        )
    if name == "cross_entropy" and task.kind == "segmentation":
        ignore = task.ignore_index
        return lambda pred, target: cross_entropy(pred, target, ignore)
    return LOSSES[name]
