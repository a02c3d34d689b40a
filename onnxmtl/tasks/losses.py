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


def labelled_rows(target: torch.Tensor) -> torch.Tensor:
    """(N,) samples whose multilabel or regression target is given: an unlabelled sample
    (partial labels) carries a row of NaN."""
    return torch.isfinite(target.reshape(len(target), -1)).all(dim=1)


def cross_entropy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = -100):
    """Mean over the labelled samples (pixels); 0 with a gradient where the batch has none."""
    target = target.long()
    if not (target != ignore_index).any():
        return pred.sum() * 0.0
    return F.cross_entropy(pred, target, ignore_index=ignore_index)


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


def _rowwise(loss, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`loss` over the labelled samples only (`labelled_rows`); 0 where the batch has none."""
    target = target.to(pred.dtype).reshape(pred.shape)
    keep = labelled_rows(target)
    if not keep.any():
        return pred.sum() * 0.0
    return loss(pred[keep], target[keep])


def bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _rowwise(F.binary_cross_entropy_with_logits, pred, target)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _rowwise(F.mse_loss, pred, target)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _rowwise(F.l1_loss, pred, target)


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
    if name == "cross_entropy" and task.kind in ("segmentation", "classification"):
        ignore = task.ignore_index
        return lambda pred, target: cross_entropy(pred, target, ignore)
    return LOSSES[name]
