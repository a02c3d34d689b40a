"""What a task's head reads from the backbone, and how its output meets the image size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import fx, nn

from onnxmtl.tasks import Task, reads_all_features

V = TypeVar("V")  # a feature value: a tensor, or the fx node computing one


def head_input(task: Task, feats: Sequence[V]) -> V | tuple[V, ...]:
    """Heads given by name read the last feature value; custom heads (a factory or a module)
    and registered heads that read an early map read all of them (a tuple) when there are
    several."""
    return tuple(feats) if reads_all_features(task) and len(feats) > 1 else feats[-1]


def fit_to_image(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A dense output `y` resized (bilinear) to the spatial size of the image batch `x` where
    it is a map of another size, so that it lines up with the image's pixels."""
    if y.dim() == x.dim() and y.shape[2:] != x.shape[2:]:
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)
    return y


# A derived model traced from the supermodel calls it as one function (its size test needs
# real tensors).
fx.wrap("fit_to_image")


def head_output(
    task: Task, head: nn.Module, feats: tuple[torch.Tensor, ...], x: torch.Tensor
) -> torch.Tensor:
    """A task's output: its head on `head_input`, dense outputs fitted to the image `x`."""
    y = head(head_input(task, feats))
    return fit_to_image(y, x) if task.dense else y
