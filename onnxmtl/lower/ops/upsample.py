"""Upsample (opsets 7-10) and Resize (10 on) by their exact ONNX definition: torch's
interpolate has no mode for most of ONNX's coordinate transformations and rounding modes
(linear in 'asymmetric' coordinates, nearest rounding half down...), so each resized axis
computes its source positions as the specification does and gathers them."""

from __future__ import annotations

import math

import torch
from torch import nn

from onnxmtl.errors import LoweringError
from onnxmtl.lower.ops.common import const_input, require_const, result, unsupported_attr
from onnxmtl.lower.registry import onnx2torch_converter, register_converter

# Cases where torch's interpolate computes exactly what ONNX specifies (and faster): onnx2torch
# lowers them.
INTERPOLATE_EXACT = {
    ("linear", "half_pixel"),
    ("linear", "pytorch_half_pixel"),
    ("linear", "align_corners"),
    ("nearest", "asymmetric", "floor"),
}

# Source position of destination index `d` on an axis resized from `n` to `m` by `s`.
COORDINATES = {
    "half_pixel": lambda d, s, n, m: (d + 0.5) / s - 0.5,
    "pytorch_half_pixel": lambda d, s, n, m: (d + 0.5) / s - 0.5 if m > 1 else d * 0.0,
    "align_corners": lambda d, s, n, m: d * ((n - 1) / (m - 1)) if m > 1 else d * 0.0,
    "asymmetric": lambda d, s, n, m: d / s,
    "tf_half_pixel_for_nn": lambda d, s, n, m: (d + 0.5) / s,
}
NEAREST = {
    "round_prefer_floor": lambda x: torch.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: torch.floor(x + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


class GridResize(nn.Module):
    """Resize the spatial axes to `sizes`, or by `scales` (output floor(n * scale)), reading
    each destination index at its source position under `coordinate`: `nearest` rounds it
    with `rounding`, `linear` interpolates its two neighbours (positions clamped to the
    axis)."""

    def __init__(
        self,
        scales: list[float] | None,
        sizes: list[int] | None,
        mode: str,
        coordinate: str = "asymmetric",
        rounding: str = "floor",
    ) -> None:
        super().__init__()
        self.scales, self.sizes = scales, sizes
        self.mode, self.coordinate, self.rounding = mode, coordinate, rounding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in range(x.dim()):
            size = x.shape[axis]
            if self.sizes is not None:
                out = self.sizes[axis]
                scale = out / size
            else:
                assert self.scales is not None  # the converter gives scales or sizes
                scale = self.scales[axis]
                out = math.floor(size * scale)
            if out != size or scale != 1.0:
                x = self._axis(x, axis, size, out, scale)
        return x

    def _axis(self, x: torch.Tensor, axis: int, size: int, out: int, scale: float) -> torch.Tensor:
        index = torch.arange(out, device=x.device, dtype=torch.float32)
        source = COORDINATES[self.coordinate](index, scale, size, out)
        if self.mode == "nearest":
            picked = NEAREST[self.rounding](source).long().clamp(0, size - 1)
            return x.index_select(axis, picked)
        source = source.clamp(0, size - 1)
        low = torch.floor(source)
        shape = [1] * x.dim()
        shape[axis] = out
        weight = (source - low).to(x.dtype).reshape(shape)
        low = low.long()
        high = (low + 1).clamp(max=size - 1)
        return x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight


def _text(node, name: str, default: str) -> str:
    value = node.attributes.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _mode(node) -> str:
    mode = _text(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise unsupported_attr(node, "mode", mode, "use 'nearest' or 'linear'.")
    return mode


@register_converter("Upsample", 9)
def _upsample(node, graph):
    if "scales" in node.attributes:
        scales = [float(s) for s in node.attributes["scales"]]
    else:
        scales = [float(s) for s in require_const(node, graph, 1, "scales")]
    return result(node, GridResize(scales, None, _mode(node)))


@register_converter("Resize", 10)
def _resize_10(node, graph):
    scales = [float(s) for s in require_const(node, graph, 1, "scales")]
    return result(node, GridResize(scales, None, _mode(node)))


@register_converter("Resize", 11, 13)
def _resize(node, graph):
    coordinate = _text(node, "coordinate_transformation_mode", "half_pixel")
    if coordinate not in COORDINATES:
        raise unsupported_attr(
            node,
            "coordinate_transformation_mode",
            coordinate,
            f"use one of {', '.join(COORDINATES)}.",
        )
    rounding = _text(node, "nearest_mode", "round_prefer_floor")
    mode = _text(node, "mode", "nearest")
    if (
        mode == "cubic"
        or (mode, coordinate) in INTERPOLATE_EXACT
        or ((mode, coordinate, rounding) in INTERPOLATE_EXACT)
    ):
        fallback = onnx2torch_converter("", "Resize", 11)  # 11 and 13 alike
        if fallback is None:
            raise LoweringError(f"node '{node.name}': onnx2torch has no Resize-11 converter.")
        return fallback(node, graph)
    if rounding not in NEAREST:
        raise unsupported_attr(node, "nearest_mode", rounding, f"use one of {', '.join(NEAREST)}.")
    scales = const_input(node, graph, 2)
    sizes = const_input(node, graph, 3)
    if (scales is None or not scales.numel()) and (sizes is None or not sizes.numel()):
        raise unsupported_attr(
            node, "scales/sizes", "computed in the graph", "export the model with static sizes."
        )
    if sizes is not None and sizes.numel():
        module = GridResize(None, [int(s) for s in sizes], _mode(node), coordinate, rounding)
    else:
        assert scales is not None  # checked above: scales or sizes is given
        module = GridResize([float(s) for s in scales], None, _mode(node), coordinate, rounding)
    return result(node, module)
