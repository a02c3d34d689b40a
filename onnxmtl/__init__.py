"""onnxmtl: automated efficient multi-task learning for any ONNX vision backbone."""

from onnxmtl.benchmark import bench
from onnxmtl.compiler import Policy, SuperModel, compile, load_supermodel
from onnxmtl.derived import DerivedModel, derive, load_derived
from onnxmtl.errors import OnnxMtlError
from onnxmtl.exporter import export
from onnxmtl.ir import Graph, Unit, load
from onnxmtl.pipeline import demo, run
from onnxmtl.pipeline.stages import search, train_baseline
from onnxmtl.tasks import Task, load_tasks
from onnxmtl.training import SearchConfig
from onnxmtl.version import __version__

__all__ = [
    "DerivedModel",
    "Graph",
    "OnnxMtlError",
    "Policy",
    "SearchConfig",
    "SuperModel",
    "Task",
    "Unit",
    "__version__",
    "bench",
    "compile",
    "demo",
    "derive",
    "export",
    "load",
    "load_derived",
    "load_supermodel",
    "load_tasks",
    "run",
    "search",
    "train_baseline",
]
