"""Activations missing from onnx2torch: Gelu (opset 20), Mish."""

from __future__ import annotations

from torch import nn

from onnxmtl.lower.ops.common import result, unsupported_attr
from onnxmtl.lower.registry import register_converter


@register_converter("Gelu", 20)
def _gelu(node, graph):
    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    if approximate not in ("none", "tanh"):
        raise unsupported_attr(node, "approximate", approximate, "use 'none' or 'tanh'.")
    return result(node, nn.GELU(approximate=approximate))


@register_converter("Mish", 18)
def _mish(node, graph):
    return result(node, nn.Mish())
