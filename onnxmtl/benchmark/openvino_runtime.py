"""OpenVINO as a second runtime for bench: the same files, compiled for its CPU plugin at a
stated precision, checked against onnxruntime before they are timed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxmtl.choices import OPENVINO_PRECISIONS
from onnxmtl.errors import ConfigError, ExportMismatchError
from onnxmtl.lower.verify import max_diffs
from onnxmtl.runtime import session

PARITY = 1e-4  # at f32: the largest difference from onnxruntime / the output scale


def openvino_module() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(
            "--runtime openvino: OpenVINO is not installed; pip install 'onnxmtl[openvino]'."
        ) from exc
    return openvino


def compile_model(path: Path, precision: str, threads: int = 0) -> Any:
    """The file compiled by OpenVINO's CPU plugin with `precision` as its inference
    precision hint (its default on CPUs with bf16 units is bf16, hence stated)."""
    if precision not in OPENVINO_PRECISIONS:
        raise ConfigError(
            f"precision {precision!r}: expected one of {', '.join(OPENVINO_PRECISIONS)}."
        )
    ov = openvino_module()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), "CPU", config)


def openvino_call(compiled: Any, x: np.ndarray) -> Callable[[], None]:
    """A call running the compiled model on `x` (one infer request, reused)."""
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def parity(compiled: Any, path: Path, x: np.ndarray, precision: str) -> float:
    """The largest difference between OpenVINO's outputs and onnxruntime's (CPU) on `x`,
    relative to each output's scale; at f32 an ExportMismatchError over `PARITY` (at bf16 or
    f16 the difference is what the precision costs, and is reported, not refused)."""
    ort = session(str(path), ["CPUExecutionProvider"])
    names = [o.name for o in ort.get_outputs()]
    expected = ort.run(names, {ort.get_inputs()[0].name: x})
    result = compiled.create_infer_request().infer({0: x})
    got = [np.asarray(result[compiled.output(name)]) for name in names]
    rel = max_diffs(expected, got)[1]
    if precision == "f32" and rel > PARITY:
        raise ExportMismatchError(
            f"{path}: OpenVINO (f32) differs from onnxruntime by {rel:.3g} of the output scale "
            f"(tolerance {PARITY:g}); its timings would not be of the same model."
        )
    return rel
