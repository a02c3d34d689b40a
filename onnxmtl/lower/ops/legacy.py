"""Ops at the since-versions that opset 9-12 graphs (the legacy model zoo) use and onnx2torch
lacks: Dropout-7, Slice-1 (attribute starts/ends/axes) and GlobalMaxPool-1."""

from __future__ import annotations

import torch
from torch import nn

from onnxmtl.lower.ops.common import result
from onnxmtl.lower.registry import register_converter


@register_converter("Dropout", 7)
def _dropout(node, graph):
    """Dropout as onnx2torch lowers Dropout-10: identity in eval mode, active in training."""
    return result(node, nn.Dropout(p=float(node.attributes.get("ratio", 0.5))))


class Slice(nn.Module):
    """Slice with constant starts and ends (clamped as Python slices are) on given axes."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int]):
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * x.dim()
        for start, end, axis in zip(self.starts, self.ends, self.axes):
            index[axis % x.dim()] = slice(start, end)
        return x[tuple(index)]


@register_converter("Slice", 1)
def _slice(node, graph):
    starts = [int(s) for s in node.attributes["starts"]]
    ends = [int(e) for e in node.attributes["ends"]]
    axes = [int(a) for a in node.attributes.get("axes", range(len(starts)))]
    return result(node, Slice(starts, ends, axes))


class GlobalMaxPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register_converter("GlobalMaxPool", 1)
def _global_max_pool(node, graph):
    return result(node, GlobalMaxPool())
