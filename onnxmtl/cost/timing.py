"""onnxruntime timings of what a latency table holds: small modules (a unit in context), each
warm and on its own, and whole derived models as they are exported."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnxmtl.benchmark.bench import bound_call
from onnxmtl.benchmark.timing import median_seconds
from onnxmtl.derived import DerivedModel, perturb_weights
from onnxmtl.exporter import export, trace_to_onnx
from onnxmtl.runtime import session

OPSET = 17


class Timer:
    """onnxruntime sessions of small models, each timed on its own and warm (worker threads
    not spinning between calls, as in the calibration), minus the time of a call that only
    copies the first input (an Identity session), so that per-call overhead is not counted
    as compute."""

    def __init__(self, providers: list[str], threads: int) -> None:
        self.providers, self.threads = providers, threads
        self.calls: dict[str, Callable[[], None]] = {}
        self.baseline_of: dict[str, str] = {}

    def add(self, name: str, module: nn.Module, inputs: list[torch.Tensor]) -> None:
        """Export `module` on `inputs` and keep its session's call as `name`."""
        self.calls[name] = self._call(module, inputs)
        null = f"identity{tuple(inputs[0].shape)}"
        if null not in self.calls:
            self.calls[null] = self._call(nn.Identity(), inputs[:1])
        self.baseline_of[name] = null

    def _call(self, module: nn.Module, inputs: list[torch.Tensor]) -> Callable[[], None]:
        names = [f"x{i}" for i in range(len(inputs))]
        with torch.no_grad():
            proto = trace_to_onnx(module.eval(), inputs, names, opset=OPSET)
        sess = session(proto, self.providers, self.threads, spinning=False)
        kept = {i.name for i in sess.get_inputs()}
        feed = {n: x.detach().numpy() for n, x in zip(names, inputs) if n in kept}
        return bound_call(sess, feed)[0]

    def medians_ms(self, repeats: int, warmup: int) -> dict[str, float]:
        """Median ms of every added module, less its Identity baseline (at least 0)."""
        ms = {name: median_seconds(fn, repeats, warmup) * 1e3 for name, fn in self.calls.items()}
        return {name: max(ms[name] - ms[null], 0.0) for name, null in self.baseline_of.items()}


def time_models(
    models: dict[str, DerivedModel],
    providers: list[str],
    threads: int,
    batch: int,
    repeats: int,
    warmup: int,
) -> dict[str, float]:
    """Median ms of derived models, exported and each timed on its own."""
    calls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, derived in models.items():
            path = Path(tmp) / f"{name}.onnx"
            report = export(perturb_weights(derived), path)
            sess = session(str(path), providers, threads, spinning=False)
            shape = (batch, *report.input_shape[1:])
            feed = {"image": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
            calls[name] = bound_call(sess, feed)[0]
        return {name: median_seconds(fn, repeats, warmup) * 1e3 for name, fn in calls.items()}
