"""Split (opset 18, num_outputs), SplitToSequence and SequenceAt (dynamo's chunk/split)."""

from __future__ import annotations

import torch
from torch import nn

from onnxmtl.lower.ops.common import const_input, require_const, result
from onnxmtl.lower.registry import register_converter


class Split(nn.Module):
    """Split along `axis` into given sizes (or pieces of one size), or into `parts` chunks;
    with neither, into pieces of 1 (squeezed unless `keepdims`)."""

    def __init__(
        self, axis: int, sizes: int | list[int] | None, parts: int | None, keepdims: bool = True
    ):
        super().__init__()
        self.axis, self.sizes, self.parts, self.keepdims = axis, sizes, parts, keepdims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.sizes is not None:
            return list(torch.split(x, self.sizes, dim=self.axis))
        if self.parts is not None:
            chunk = -(-x.shape[self.axis] // self.parts)
            return list(torch.split(x, chunk, dim=self.axis))
        pieces = torch.split(x, 1, dim=self.axis)
        return [p if self.keepdims else p.squeeze(self.axis) for p in pieces]


@register_converter("Split", 18)
def _split(node, graph):
    sizes = const_input(node, graph, 1)
    parts = node.attributes.get("num_outputs")
    if sizes is None and parts is None:
        parts = len(node.output_values)
    module = Split(
        node.attributes.get("axis", 0),
        None if sizes is None else [int(s) for s in sizes],
        None if sizes is not None else int(parts),
    )
    return result(node, module)


@register_converter("SplitToSequence", 11)
def _split_to_sequence(node, graph):
    axis = node.attributes.get("axis", 0)
    keepdims = bool(node.attributes.get("keepdims", 1))
    split = const_input(node, graph, 1)
    sizes: int | list[int] | None
    if split is None:
        sizes = None
    elif split.dim() == 0:
        sizes = int(split)
    else:
        sizes = [int(s) for s in split]
    return result(node, Split(axis, sizes, None, keepdims))


class SequenceAt(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, sequence: list[torch.Tensor]) -> torch.Tensor:
        return sequence[self.index]


@register_converter("SequenceAt", 11)
def _sequence_at(node, graph):
    index = int(require_const(node, graph, 1, "position"))
    return result(node, SequenceAt(index))
