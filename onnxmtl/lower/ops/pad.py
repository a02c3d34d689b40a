"""Pad for every opset from 2 to 21 (axes input since 18, 'wrap' mode since 19)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onnxmtl.lower.ops.common import const_input, require_const, result, unsupported_attr
from onnxmtl.lower.registry import register_converter

_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class Pad(nn.Module):
    """ONNX Pad with constant pads given per axis as (begins..., ends...)."""

    def __init__(self, pads: list[int], axes: list[int] | None, mode: str, value: float):
        super().__init__()
        self.pads, self.axes, self.mode, self.value = pads, axes, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = x.dim()
        axes = [a % rank for a in self.axes] if self.axes is not None else list(range(rank))
        half = len(self.pads) // 2
        begins = dict(zip(axes, self.pads[:half]))
        ends = dict(zip(axes, self.pads[half:]))
        first = min((a for a in axes if begins[a] or ends[a]), default=rank)
        torch_pads: list[int] = []
        for axis in range(rank - 1, first - 1, -1):
            torch_pads += [begins.get(axis, 0), ends.get(axis, 0)]
        if not torch_pads:
            return x
        if self.mode == "constant":
            return F.pad(x, torch_pads, mode="constant", value=self.value)
        return F.pad(x, torch_pads, mode=self.mode)


@register_converter("Pad", 2, 11, 13, 18, 19, 21)
def _pad(node, graph):
    mode = node.attributes.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in _MODES:
        raise unsupported_attr(node, "mode", mode, f"use one of {sorted(_MODES)}.")
    if "pads" in node.attributes:
        pads = list(node.attributes["pads"])
        value = float(node.attributes.get("value", 0.0))
        axes = None
    else:
        pads = [int(p) for p in require_const(node, graph, 1, "pads")]
        constant = const_input(node, graph, 2)
        value = 0.0 if constant is None or constant.numel() == 0 else float(constant)
        axes_t = const_input(node, graph, 3)
        axes = None if axes_t is None else [int(a) for a in axes_t]
    return result(node, Pad(pads, axes, _MODES[mode], value))
