"""Load stage: ONNX file -> normalised IR `Graph` with units and feature outputs."""

from onnxmtl.ir.graph import Graph
from onnxmtl.ir.load import load
from onnxmtl.ir.units import Unit

__all__ = ["Graph", "Unit", "load"]
