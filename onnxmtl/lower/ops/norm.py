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
    """Normalisation over the axes from `axis` on, sized by the input at run time, with a
    trainable scale and (optional) bias broadcast over them as ONNX allows."""

    def __init__(self, axis: int, weight: torch.Tensor, bias: torch.Tensor | None, eps: float):
        super().__init__()
        self.axis, self.eps = axis, eps
        self.weight = nn.Parameter(weight.clone())
        self.bias = None if bias is None else nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[self.axis :]
        weight = self.weight if self.weight.shape == shape else self.weight.expand(shape)
        bias = self.bias
        if bias is not None and bias.shape != shape:
            bias = bias.expand(shape)
        return F.layer_norm(x, shape, weight, bias, self.eps)


@register_converter("LayerNormalization", 17)
def _layer_norm(node, graph):
    scale = require_const(node, graph, 1, "scale")
    bias = const_input(node, graph, 2)
    if bias is None and len(node.input_values) > 2 and node.input_values[2]:
        require_const(node, graph, 2, "bias")  # computed: the same one-line error
    if int(node.attributes.get("stash_type", 1)) != 1:
        raise unsupported_attr(
            node, "stash_type", node.attributes["stash_type"], "only float32 statistics (1)."
        )
    axis = int(node.attributes.get("axis", -1))
    eps = float(node.attributes.get("epsilon", 1e-5))
    return result(node, LayerNorm(axis, scale, bias, eps))
