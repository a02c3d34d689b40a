"""Upsample (opsets 7-10) and Resize-10: scales only, and 'asymmetric' coordinates
(source = destination / scale), which torch's interpolate has no mode for in linear."""

from __future__ import annotations

import math

import torch
from torch import nn

from onnxmtl.lower.ops.common import require_const, result, unsupported_attr
from onnxmtl.lower.registry import register_converter


class AsymmetricResize(nn.Module):
    """Resize every axis by its scale, reading source position destination / scale: nearest
    rounds it down (Upsample) or to the nearest, halves down (Resize-10); linear interpolates
    between its two neighbours, clamped at the border."""

    def __init__(self, scales: list[float], mode: str, nearest_floor: bool):
        super().__init__()
        self.scales, self.mode, self.nearest_floor = scales, mode, nearest_floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, scale in enumerate(self.scales):
            if scale != 1.0:
                x = self._axis(x, axis, scale)
        return x

    def _axis(self, x: torch.Tensor, axis: int, scale: float) -> torch.Tensor:
        size = x.shape[axis]
        out = math.floor(size * scale)
        source = torch.arange(out, device=x.device, dtype=torch.float32) / scale
        if self.mode == "nearest":
            index = torch.floor(source) if self.nearest_floor else torch.ceil(source - 0.5)
            return x.index_select(axis, index.long().clamp(0, size - 1))
        low = torch.floor(source).clamp(max=size - 1)
        weight = (source - low).to(x.dtype)
        shape = [1] * x.dim()
        shape[axis] = out
        weight = weight.reshape(shape)
        low = low.long()
        high = (low + 1).clamp(max=size - 1)
        return x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight


def _mode(node) -> str:
    mode = node.attributes.get("mode", "nearest")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("nearest", "linear"):
        raise unsupported_attr(node, "mode", mode, "use 'nearest' or 'linear'.")
    return mode


@register_converter("Upsample", 9)
def _upsample(node, graph):
    if "scales" in node.attributes:
        scales = [float(s) for s in node.attributes["scales"]]
    else:
        scales = [float(s) for s in require_const(node, graph, 1, "scales")]
    return result(node, AsymmetricResize(scales, _mode(node), nearest_floor=True))


@register_converter("Resize", 10)
def _resize(node, graph):
    scales = [float(s) for s in require_const(node, graph, 1, "scales")]
    return result(node, AsymmetricResize(scales, _mode(node), nearest_floor=True))
