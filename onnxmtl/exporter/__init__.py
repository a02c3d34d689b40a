"""Export: a derived multi-task model as one ONNX graph that onnxruntime runs."""

from onnxmtl.exporter.onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    POLICY_KEY,
    ExportReport,
    export,
    image_shape,
    trace_to_onnx,
)

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "POLICY_KEY",
    "ExportReport",
    "export",
    "image_shape",
    "trace_to_onnx",
]
