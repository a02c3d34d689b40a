"""onnxmtl: automated efficient multi-task learning for any ONNX vision backbone."""

from onnxmtl.compiler import Policy, SuperModel, compile, load_supermodel
from onnxmtl.errors import OnnxMtlError
from onnxmtl.ir import Graph, Unit, load
from onnxmtl.tasks import Task, load_tasks

__version__ = "0.1.0"
__all__ = [
    "Graph",
    "OnnxMtlError",
    "Policy",
    "SuperModel",
    "Task",
    "Unit",
    "__version__",
    "compile",
    "load",
    "load_supermodel",
    "load_tasks",
]
