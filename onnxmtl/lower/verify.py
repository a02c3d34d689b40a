"""`verify`: the lowered model against onnxruntime on the same (cut) graph and input."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from onnxmtl.errors import ModelFileError
from onnxmtl.ir import Graph
from onnxmtl.lower.build import lower
from onnxmtl.runtime import session

DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class Verification:
    """How far the lowered model is from onnxruntime, relative to the output's scale."""

    max_abs_diff: float
    max_rel_diff: float  # max |torch - ort| / max |ort|, over every feature output
    tolerance: float
    input_shape: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.max_rel_diff <= self.tolerance


def run_module(module: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """Every output of `module` in eval mode for input `x`, as numpy arrays."""
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [o.numpy() for o in ([out] if isinstance(out, torch.Tensor) else out)]


def verify(
    graph: Graph,
    module: torch.nn.Module | None = None,
    batch: int = 2,
    seed: int = 0,
    tolerance: float = DEFAULT_RTOL,
) -> Verification:
    """Run one seeded standard-normal input through onnxruntime and the lowered model."""
    module = lower(graph) if module is None else module
    shape = tuple(batch if not isinstance(d, int) else d for d in graph.input_shape)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    expected = session(graph.to_proto(), ["CPUExecutionProvider"]).run(
        graph.features, {graph.input_name: x}
    )
    for name, ref in zip(graph.features, expected):
        bad = nonfinite(ref)
        if bad:
            raise ModelFileError(
                f"{graph.source}: onnxruntime's output '{name}' holds {bad} NaN/inf value(s) "
                "for a standard-normal input, so there is nothing to verify against; check the "
                "model's weights (NaN or inf) and re-export it."
            )
    max_abs, max_rel = max_diffs(expected, run_module(module, x))
    return Verification(max_abs, max_rel, tolerance, shape)


def nonfinite(array: np.ndarray) -> int:
    """How many values of `array` are NaN or infinite."""
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def max_diffs(expected: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    """The largest absolute difference over outputs, and the largest relative to each
    reference output's largest magnitude; both infinite where an output holds a NaN or an
    infinity (a comparison with NaN would otherwise read as no difference)."""
    if any(nonfinite(a) for a in (*expected, *got)):
        return math.inf, math.inf
    max_abs = max_rel = 0.0
    for ref, out in zip(expected, got, strict=True):
        diff = float(np.max(np.abs(out - ref))) if ref.size else 0.0
        scale = max(float(np.max(np.abs(ref))), 1e-12) if ref.size else 1.0
        max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / scale)
    return max_abs, max_rel


def summarize_verification(graph: Graph, result: Verification) -> dict[str, Any]:
    """`result` for `graph` as JSON-ready data."""
    return {
        "model": graph.source,
        "ok": result.ok,
        "max_abs_diff": result.max_abs_diff,
        "max_rel_diff": result.max_rel_diff,
        "tolerance": result.tolerance,
        "input_shape": list(result.input_shape),
        "units": len(graph.units),
        "params": graph.params,
        "features": graph.features,
    }


def describe_verification(graph: Graph, result: Verification) -> str:
    """`result` for `graph` in one line: the verdict first, then the differences."""
    verdict = "OK" if result.ok else "MISMATCH"
    return (
        f"{verdict}: {graph.source}  max abs diff {result.max_abs_diff:.3g}  "
        f"max rel diff {result.max_rel_diff:.3g} (tolerance {result.tolerance:g})  "
        f"units {len(graph.units)}  params {graph.params:,}  "
        f"features {', '.join(graph.features)}"
    )
