"""The whole pipeline in one call (`run`), the bundled demo, and the run report."""

from onnxmtl.pipeline.demo import demo
from onnxmtl.pipeline.report import write_report
from onnxmtl.pipeline.stages import RunResult, run

__all__ = ["RunResult", "demo", "run", "write_report"]
