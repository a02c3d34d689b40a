"""Standard metrics per task kind, accumulated over a dataset batch by batch.

Every metric is pooled over all scored pixels or samples of the dataset (not averaged per
batch), so the result does not depend on the batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnxmtl.tasks.losses import dense_target, depth_valid, labelled_rows, normals_valid
from onnxmtl.tasks.task import Task

# Whether a larger value is better, per metric name (the sign used by delta-m).
HIGHER_IS_BETTER = {
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "rel_err": False,
    "delta1": True,
    "delta2": True,
    "delta3": True,
    "mean_angle": False,
    "median_angle": False,
    "within_11_25": True,
    "within_22_5": True,
    "within_30": True,
    "accuracy": True,
    "top5": True,
    "label_accuracy": True,
    "subset_accuracy": True,
    "mae": False,
    "rmse": False,
}


class Metric:
    """Accumulates one task's predictions against targets; `compute` gives named values."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class SegmentationMetric(Metric):
    """mIoU from the confusion matrix and pixel accuracy, ignoring `ignore_index` pixels.

    A class absent from both prediction and ground truth has no IoU and is left out of the
    mean; every other class counts, including one with no true positives (IoU 0).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels = pred.argmax(dim=1).flatten().cpu()
        target = target.flatten().long().cpu()
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        index = target[keep] * self.num_classes + labels[keep]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict[str, float]:
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        present = union > 0
        total = cm.sum()
        return {
            "miou": float((tp[present] / union[present]).mean()) if present.any() else math.nan,
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        }


class DepthMetric(Metric):
    """Absolute and relative error and delta < 1.25^k accuracy over valid pixels."""

    def __init__(self) -> None:
        self.sums = torch.zeros(5, dtype=torch.float64)
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        target = dense_target(target).detach().cpu().double()
        pred = pred.detach().cpu().double()
        valid = depth_valid(target)
        p, t = pred[valid], target[valid]
        ratio = torch.maximum(p / t, t / p.clamp_min(1e-12))
        ratio = torch.where(p > 0, ratio, torch.full_like(ratio, math.inf))
        self.sums += torch.stack(
            [
                (p - t).abs().sum(),
                ((p - t).abs() / t).sum(),
                (ratio < 1.25).sum(),
                (ratio < 1.25**2).sum(),
                (ratio < 1.25**3).sum(),
            ]
        )
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return dict.fromkeys(("abs_err", "rel_err", "delta1", "delta2", "delta3"), math.nan)
        means = (self.sums / self.count).tolist()
        return dict(zip(("abs_err", "rel_err", "delta1", "delta2", "delta3"), means))


class NormalsMetric(Metric):
    """Mean and median angular error (degrees) and the share of pixels within 11.25, 22.5, 30.

    The median comes from a histogram of 0.001-degree bins, so memory does not grow with the
    dataset; it is exact to within half a bin.
    """

    BIN = 0.001

    def __init__(self) -> None:
        self.hist = torch.zeros(int(180 / self.BIN) + 1, dtype=torch.int64)
        self.total = 0.0
        self.within = torch.zeros(3, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.detach().cpu().double(), target.detach().cpu().double()
        valid = normals_valid(target)
        cos = F.cosine_similarity(pred, target, dim=1, eps=1e-12)[valid]
        angle = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
        self.total += float(angle.sum())
        self.hist += torch.bincount((angle / self.BIN).round().long(), minlength=len(self.hist))
        self.within += torch.stack([(angle < a).sum() for a in (11.25, 22.5, 30.0)])

    def compute(self) -> dict[str, float]:
        count = int(self.hist.sum())
        if count == 0:
            keys = ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30")
            return dict.fromkeys(keys, math.nan)
        cumulative = torch.cumsum(self.hist, 0)
        median = float(torch.searchsorted(cumulative, (count + 1) // 2)) * self.BIN
        share = (self.within.double() / count).tolist()
        return {
            "mean_angle": self.total / count,
            "median_angle": median,
            "within_11_25": share[0],
            "within_22_5": share[1],
            "within_30": share[2],
        }


class ClassificationMetric(Metric):
    """Top-1 accuracy, and top-5 accuracy where there are more than five classes."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.k = 5 if num_classes > 5 else None
        self.ignore_index = ignore_index
        self.correct = torch.zeros(2, dtype=torch.int64)
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        target = target.detach().cpu().long().view(-1, 1)
        keep = target[:, 0] != self.ignore_index  # unlabelled samples are not scored
        target, pred = target[keep], pred.detach().cpu()[keep]
        top = pred.topk(self.k or 1, dim=1).indices
        self.correct += torch.stack(
            [(top[:, :1] == target).any(1).sum(), (top == target).any(1).sum()]
        )
        self.count += len(target)

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {"accuracy": float(self.correct[0]) / n if self.count else math.nan}
        if self.k:
            out["top5"] = float(self.correct[1]) / n if self.count else math.nan
        return out


class MultilabelMetric(Metric):
    """Per-label accuracy and exact-match (subset) accuracy, thresholding logits at 0."""

    def __init__(self) -> None:
        self.labels_right = 0
        self.labels = 0
        self.subsets_right = 0
        self.samples = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        target = target.detach().cpu()
        keep = labelled_rows(target)  # unlabelled samples are not scored
        right = (pred.detach().cpu()[keep] > 0) == (target[keep] > 0.5)
        self.labels_right += int(right.sum())
        self.labels += right.numel()
        self.subsets_right += int(right.all(dim=1).sum())
        self.samples += right.shape[0]

    def compute(self) -> dict[str, float]:
        if not self.samples:
            return {"label_accuracy": math.nan, "subset_accuracy": math.nan}
        return {
            "label_accuracy": self.labels_right / self.labels,
            "subset_accuracy": self.subsets_right / self.samples,
        }


class RegressionMetric(Metric):
    """Mean absolute error and root mean squared error over all predicted values."""

    def __init__(self) -> None:
        self.abs = 0.0
        self.sq = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = pred.detach().cpu().double()
        target = target.detach().cpu().double().reshape(pred.shape)
        keep = labelled_rows(target)  # unlabelled samples are not scored
        diff = pred[keep] - target[keep]
        self.abs += float(diff.abs().sum())
        self.sq += float((diff**2).sum())
        self.count += diff.numel()

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {"mae": math.nan, "rmse": math.nan}
        return {"mae": self.abs / self.count, "rmse": math.sqrt(self.sq / self.count)}


def make_metric(task: Task) -> Metric:
    """A fresh accumulator of `task`'s standard metrics."""
    if task.kind == "segmentation":
        return SegmentationMetric(task.outputs, task.ignore_index)
    if task.kind == "depth":
        return DepthMetric()
    if task.kind == "normals":
        return NormalsMetric()
    if task.kind == "classification":
        return ClassificationMetric(task.outputs, task.ignore_index)
    if task.kind == "multilabel":
        return MultilabelMetric()
    return RegressionMetric()


def format_metrics(metrics: dict[str, dict[str, float]], title: str) -> str:
    """Metrics per task (as evaluation gives them) under `title`, one indented line a task."""
    lines = [title]
    for task, values in metrics.items():
        text = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        lines.append(f"  {task:<12} {text}")
    return "\n".join(lines)
