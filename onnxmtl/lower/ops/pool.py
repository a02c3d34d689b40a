"""AveragePool at opset 19 (adds dilations): lowered as opset 11 when dilations are 1."""

from __future__ import annotations

from onnxmtl.lower.ops.common import unsupported_attr
from onnxmtl.lower.registry import find_converter, register_converter


@register_converter("AveragePool", 19)
def _average_pool(node, graph):
    dilations = list(node.attributes.get("dilations", []))
    if any(d != 1 for d in dilations):
        raise unsupported_attr(node, "dilations", dilations, "only dilation 1 is supported.")
    return find_converter(node.domain, "AveragePool", 11)(node, graph)
