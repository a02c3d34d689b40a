"""Reduce* at opset 18+, where the axes are an input rather than an attribute."""

from __future__ import annotations

import torch
from torch import nn

from onnxmtl.lower.ops.common import const_input, result

_REDUCERS = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


class Reduce(nn.Module):
    """An ONNX reduction over constant `axes` (None: every axis, or none with noop)."""

    def __init__(self, op_type: str, axes: list[int] | None, keepdims: bool, noop: bool):
        super().__init__()
        self.op_type, self.axes, self.keepdims, self.noop = op_type, axes, keepdims, noop

    def forward(self, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = self.axes if axes is None else [int(a) for a in axes]
        if not dims:
            if self.noop:
                return x
            dims = list(range(x.dim()))
        return _REDUCERS[self.op_type](x, dims, self.keepdims)


def _convert(node, graph):
    axes = const_input(node, graph, 1)
    computed = axes is None and len(node.input_values) > 1 and bool(node.input_values[1])
    module = Reduce(
        node.operation_type,
        None if axes is None else [int(a) for a in axes],
        bool(node.attributes.get("keepdims", 1)),
        bool(node.attributes.get("noop_with_empty_axes", 0)),
    )
    return result(node, module, n_inputs=2 if computed else 1)


def _register() -> None:
    from onnxmtl.lower.registry import register_converter

    for op in _REDUCERS:
        register_converter(op, 18)(_convert)
    register_converter("ReduceSum", 13)(_convert)


_register()
