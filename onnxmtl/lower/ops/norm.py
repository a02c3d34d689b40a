"""GroupNormalization (opsets 18 and 21), missing from onnx2torch, and LayerNormalization
(opset 17), whose onnx2torch converter sizes the normalised axes from the exported shapes and
so breaks where they are symbolic (MobileViT's token axes: it builds a LayerNorm over 0
elements)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onnxmtl.lower.ops.common import const_input, require_const, result, unsupported_attr
from onnxmtl.lower.registry import register_converter


class GroupNorm(nn.Module):
    """Group normalisation with a per-channel affine transform (trainable)."""

    def __init__(self, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


@register_converter("GroupNormalization", 18, 21)
def _group_norm(node, graph):
    groups = int(node.attributes["num_groups"])
    scale = require_const(node, graph, 1, "scale")
    bias = require_const(node, graph, 2, "bias")
    if scale.numel() == groups and groups > 0:
        channels = graph.value_info[node.input_values[0]].type.tensor_type.shape.dim[1].dim_value
        scale = scale.repeat_interleave(channels // groups)
        bias = bias.repeat_interleave(channels // groups)
    eps = float(node.attributes.get("epsilon", 1e-5))
    return result(node, GroupNorm(groups, scale, bias, eps))


class LayerNorm(nn.Module):
    """Normalisation over the trailing axes the (trainable) scale and bias cover, as
    `nn.LayerNorm` but keeping ONNX's optional bias; the size is a constant, so the module
    exports again with a symbolic batch."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps: float):
        super().__init__()
        self.shape, self.eps = tuple(weight.shape), eps
        self.weight = nn.Parameter(weight.clone())
        self.bias = None if bias is None else nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


@register_converter("LayerNormalization", 17)
def _layer_norm(node, graph):
    scale = require_const(node, graph, 1, "scale")
    bias = const_input(node, graph, 2)
    if bias is None and len(node.input_values) > 2 and node.input_values[2]:
        require_const(node, graph, 2, "bias")  # computed: the same one-line error
    axis = int(node.attributes.get("axis", -1))
    rank = len(graph.value_info[node.input_values[0]].type.tensor_type.shape.dim)
    if (rank - axis if axis >= 0 else -axis) != scale.dim():
        raise unsupported_attr(
            node, "axis", axis, f"the scale {tuple(scale.shape)} must span the normalised axes."
        )
    if int(node.attributes.get("stash_type", 1)) != 1:
        raise unsupported_attr(
            node, "stash_type", node.attributes["stash_type"], "only float32 statistics (1)."
        )
    return result(node, LayerNorm(scale, bias, float(node.attributes.get("epsilon", 1e-5))))
