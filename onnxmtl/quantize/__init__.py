"""Quantise: an exported model as static INT8, with every task's accuracy measured."""

from onnxmtl.quantize.evaluate_onnx import evaluate_onnx
from onnxmtl.quantize.int8 import DEFAULT_TOLERANCE, QuantizeResult, quantize_model

__all__ = ["DEFAULT_TOLERANCE", "QuantizeResult", "evaluate_onnx", "quantize_model"]
