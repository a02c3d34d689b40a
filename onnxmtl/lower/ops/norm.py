"""GroupNormalization (opsets 18 and 21), missing from onnx2torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onnxmtl.lower.ops.common import require_const, result
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
