"""Reshape (allowzero too), Shape with start/end, and newer opsets that only add types."""

from __future__ import annotations

import torch
from torch import nn
from torch.onnx.operators import reshape_from_tensor_shape

from onnxmtl.errors import LoweringError
from onnxmtl.lower.ops.common import const_input, result, unsupported_attr
from onnxmtl.lower.registry import find_converter, register_converter


class Reshape(nn.Module):
    """ONNX Reshape: 0 copies the input's dim unless `allowzero`; -1 is inferred. Under
    tracing (ONNX export) a computed shape stays a tensor, so a dynamic batch stays dynamic."""

    def __init__(self, shape: list[int] | None, allowzero: bool):
        super().__init__()
        self.shape = shape
        self.allowzero = allowzero

    def forward(self, x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        target: list[int]
        if self.shape is None:  # the target is computed in the graph
            if shape is None:
                raise LoweringError("Reshape has neither a constant nor a computed target.")
            if torch.jit.is_tracing():
                return self._traced(x, shape)
            target = [int(d) for d in shape]
        else:
            if torch.jit.is_tracing() and (shape is not None or 0 in self.shape):
                return self._traced(x, torch.tensor(self.shape) if shape is None else shape)
            target = self.shape
        if not self.allowzero:
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        return torch.reshape(x, target)

    def _traced(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        """The reshape as the tracer should record it: target dims taken from the input stay
        computed from it, so an exported model keeps its dynamic batch."""
        if not self.allowzero:
            full = torch._shape_as_tensor(x)
            k = min(len(shape), full.numel())
            dims = torch.cat([full[:k], shape[k:]])
            shape = torch.where(shape == 0, dims, shape)
        if bool((shape == 0).any()):  # zero-sized dims: the traced shape is exact here
            return torch.reshape(x, [int(d) for d in shape])
        return reshape_from_tensor_shape(x, shape)


@register_converter("Reshape", 5, 13, 14, 19, 21)
def _reshape(node, graph):
    shape = const_input(node, graph, 1)
    allowzero = bool(node.attributes.get("allowzero", 0))
    if shape is None:
        return result(node, Reshape(None, allowzero), n_inputs=2)
    return result(node, Reshape([int(d) for d in shape], allowzero))


class Shape(nn.Module):
    """ONNX Shape, as a tensor that tracing records (not a constant)."""

    def __init__(self, start: int, end: int | None):
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._shape_as_tensor(x)[self.start : self.end].to(x.device)


@register_converter("Shape", 1, 13, 15, 19, 21)
def _shape(node, graph):
    return result(node, Shape(node.attributes.get("start", 0), node.attributes.get("end")))


# Newer since-versions that only widen the accepted types, or add attributes we check are at
# their defaults: they lower exactly as the older version does.
_SAME_AS: dict[tuple[str, int], tuple[int, dict[str, object]]] = {
    ("Cast", 19): (13, {"saturate": 1}),
    ("Cast", 21): (13, {"saturate": 1}),
    ("Identity", 19): (16, {}),
    ("Identity", 21): (16, {}),
    ("Flatten", 21): (13, {}),
    ("Unsqueeze", 21): (13, {}),
    ("Transpose", 21): (13, {}),
    ("ConstantOfShape", 20): (9, {}),
    ("ConstantOfShape", 21): (9, {}),
    ("Equal", 19): (13, {}),
    ("Resize", 18): (13, {"antialias": 0, "keep_aspect_ratio_policy": "stretch"}),
    ("Resize", 19): (13, {"antialias": 0, "keep_aspect_ratio_policy": "stretch"}),
    ("Constant", 19): (13, {}),
    ("Constant", 21): (13, {}),
}


def _alias(op_type: str, old_version: int, defaults: dict[str, object]):
    def convert(node, graph):
        for name, default in defaults.items():
            value = node.attributes.get(name, default)
            if isinstance(value, bytes):
                value = value.decode()
            if value != default:
                raise unsupported_attr(node, name, value, f"only {default!r} is supported.")
        if op_type == "Resize" and len(node.input_values) > 4:
            raise unsupported_attr(node, "axes", "given", "re-export without Resize axes.")
        converter = find_converter(node.domain, op_type, old_version)
        if converter is None:
            raise LoweringError(f"node '{node.name}': no converter for {op_type}-{old_version}.")
        return converter(node, graph)

    return convert


for (_op, _version), (_old, _defaults) in _SAME_AS.items():
    register_converter(_op, _version)(_alias(_op, _old, _defaults))
