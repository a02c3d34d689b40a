"""`auto_pad` written out as explicit pads at the input size load works at.

tf2onnx writes Keras' `padding="same"` as `auto_pad=SAME_UPPER` where the spatial size is
unknown when converting (models built with `input_shape=(None, None, 3)`), and the lowering
(onnx2torch) takes explicit pads only. Load fixes the input size, so the pads SAME means there
are known: the same ones onnxruntime computes, for that size (as every other shape load
infers; a file loaded at another `input_shape` gets the pads of that size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx_ir as ir

WINDOWED = ("Conv", "MaxPool", "AveragePool", "LpPool")


def explicit_pads(model: ir.Model) -> list[str]:
    """Give every Conv or pooling node with `auto_pad` SAME_UPPER, SAME_LOWER or VALID the
    explicit pads it means for its inferred input size. Nodes whose spatial size or window is
    unknown, or pools in `ceil_mode`, are left to the lowering, which names them. Returns one
    line for `inspect` when any node changed."""
    changed = 0
    for node in model.graph:
        if node.op_type not in WINDOWED or node.domain not in ("", "ai.onnx"):
            continue
        mode = node.attributes.get_string("auto_pad", "NOTSET")
        ceil_mode = node.attributes.get_int("ceil_mode", 0)
        if mode not in ("SAME_UPPER", "SAME_LOWER", "VALID") or ceil_mode:
            continue
        pads = _pads(node, mode)
        if pads is None:
            continue
        node.attributes.pop("auto_pad")
        node.attributes["pads"] = ir.AttrInt64s("pads", pads)
        changed += 1
    if not changed:
        return []
    return [
        f"auto_pad of {changed} Conv/pooling node(s) written as explicit pads for the input size "
        "loaded (SAME padding depends on it)"
    ]


def _pads(node: ir.Node, mode: str) -> list[int] | None:
    """ONNX's pads (begins..., ends...) for `mode` at the node's input size, or None."""
    data = node.inputs[0]
    if data is None or data.shape is None:
        return None
    spatial = list(data.shape)[2:]
    window: Sequence[int | ir.SymbolicDim] | None = node.attributes.get_ints("kernel_shape")
    if window is None and node.op_type == "Conv":
        weight = node.inputs[1]
        window = None if weight is None or weight.shape is None else list(weight.shape)[2:]
    if not spatial or window is None or len(window) != len(spatial):
        return None
    sizes = [d for d in spatial if isinstance(d, int)]
    kernel = [d for d in window if isinstance(d, int)]
    if len(sizes) != len(spatial) or len(kernel) != len(window):
        return None
    strides = node.attributes.get_ints("strides") or [1] * len(sizes)
    dilations = node.attributes.get_ints("dilations") or [1] * len(sizes)
    if mode == "VALID":
        return [0] * (2 * len(sizes))
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends
