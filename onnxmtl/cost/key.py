"""What a latency table depends on: the device, the settings and the model's structure,
hashed into the key it is cached under."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch

from onnxmtl.compiler import SuperModel
from onnxmtl.cost.table import TABLE_VERSION


def device_name(providers: list[str]) -> str:
    """What runs the models: the GPU's name for the CUDA provider, else the CPU's model."""
    if providers[0] == "CUDAExecutionProvider" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _signature(model: SuperModel) -> list[Any]:
    """What the timings depend on in the model: unit operators, shapes and weights' shapes,
    skips, parameter-free operators and heads."""
    units = []
    for i, unit in enumerate(model.graph.units):
        branches = model.unit_branches(i)
        shapes = [list(p.shape) for p in branches.shared.state_dict().values()]
        skip = type(branches.skip).__name__
        units.append(
            [unit.op_type, list(unit.in_shape or ()), list(unit.out_shape or ()), shapes, skip]
        )
    heads = {
        n: [type(h).__name__, [list(p.shape) for p in h.state_dict().values()]]
        for n, h in model.heads.items()
    }
    ops = sorted(type(m).__name__ for m in model.ops.values())
    return [units, heads, ops, list(model.graph.input_shape), model.task_names]


def table_key(
    model: SuperModel, device: str, providers: list[str], batch: int, threads: int
) -> str:
    """Cache key of a latency table: the model's structure, the device and the settings."""
    data = [TABLE_VERSION, _signature(model), device, providers, batch, threads, ort.__version__]
    return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:20]
