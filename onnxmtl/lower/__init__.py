"""Lowering: the IR `Graph` as a trainable torch module, through a converter registry."""

from onnxmtl.lower.build import find_unsupported, lower, onnx_names, onnx_values
from onnxmtl.lower.registry import find_converter, register_converter

__all__ = [
    "find_converter",
    "find_unsupported",
    "lower",
    "onnx_names",
    "onnx_values",
    "register_converter",
]
