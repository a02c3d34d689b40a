"""onnxmtl: automated efficient multi-task learning for any ONNX vision backbone."""

from onnxmtl.errors import OnnxMtlError
from onnxmtl.ir import Graph, Unit, load

__version__ = "0.1.0"
__all__ = ["Graph", "OnnxMtlError", "Unit", "load", "__version__"]
