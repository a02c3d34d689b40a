"""The whole pipeline in one call (`run`), the bundled demo, and the run report."""

from onnxmtl.pipeline.demo import demo
from onnxmtl.pipeline.end_to_end import RunResult, run
from onnxmtl.pipeline.report import write_report

__all__ = ["RunResult", "demo", "run", "write_report"]
