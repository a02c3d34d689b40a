"""Bench: onnxruntime measurements of exported models, as JSON, markdown and PNG plots."""

from onnxmtl.benchmark.bench import bench, describe, resolve_providers, to_markdown
from onnxmtl.benchmark.folder import model_names, write_bench
from onnxmtl.benchmark.plots import latency_bars, policy_heatmap
from onnxmtl.benchmark.result import BenchResult, BenchSettings, LatencyRow, ModelInfo

__all__ = [
    "BenchResult",
    "BenchSettings",
    "LatencyRow",
    "ModelInfo",
    "bench",
    "describe",
    "latency_bars",
    "model_names",
    "policy_heatmap",
    "resolve_providers",
    "to_markdown",
    "write_bench",
]
