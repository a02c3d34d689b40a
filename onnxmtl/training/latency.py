"""Measured-latency costs: every unit's branches timed with onnxruntime on the target provider,
calibrated against whole derived models and cached per device and backbone."""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from onnxmtl.benchmark.bench import bound_call, resolve_providers
from onnxmtl.benchmark.timing import median_seconds
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC, SuperModel
from onnxmtl.compiler.branches import one_row
from onnxmtl.compiler.plan import unit_ancestors
from onnxmtl.derived import derive, perturb_weights
from onnxmtl.errors import ConfigError
from onnxmtl.exporter import export, trace_to_onnx
from onnxmtl.io_utils import atomic_write_text, default_cache
from onnxmtl.runtime import session
from onnxmtl.training.regularizers import expected_cost

TABLE_VERSION = 7
OPSET = 17


@dataclass
class LatencyTable:
    """Milliseconds per run of each unit's operators (shared branch = one task copy) and of
    its skip, on one device and provider at one batch size. A derived model's latency is
    predicted as `base_ms + scale * sum(branch ms x runs) + skip_scale * sum(skip ms x
    runs)`, with the three coefficients fitted to the measured all-shared, all-specific and
    all-skip models: they absorb the operators before the first unit, the heads, per-call
    overhead, and what a unit costs in a whole graph rather than on its own (a skip breaks
    the chain of convolutions onnxruntime keeps in its blocked memory layout)."""

    key: str
    device: str
    providers: list[str]
    batch: int
    threads: int
    unit_ms: list[float]
    skip_ms: list[float]
    ancestors: list[list[int]]
    base_ms: float
    scale: float
    skip_scale: float
    calibration: dict[str, float]  # measured ms and summed unit/skip ms of the calibration models

    def costs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-unit (branch, skip) costs in ms, scaled, as the regulariser takes them."""
        unit = torch.tensor(self.unit_ms, dtype=torch.float64) * self.scale
        return unit, torch.tensor(self.skip_ms, dtype=torch.float64) * self.skip_scale

    @cached_property
    def ancestor_matrix(self) -> torch.Tensor:
        """`ancestors` as the (units, units) matrix the run counts take (built once)."""
        return ancestor_matrix(self.ancestors)

    def predict(self, choices: list[list[int]]) -> float:
        """Predicted ms of the derived model of a policy (tasks x units branch indices)."""
        probs = torch.nn.functional.one_hot(torch.tensor(choices), 3).double()
        unit, skip = self.costs()
        return self.base_ms + float(expected_cost(probs, unit, skip, self.ancestor_matrix))

    def fastest(self, allowed: torch.Tensor) -> float:
        """Predicted ms of the fastest policy the branch mask (units, 3) allows: every unit
        run once by all tasks, through its cheaper allowed branch."""
        unit, skip = self.costs()
        skip = torch.where(allowed[:, SKIP].cpu(), skip, torch.inf)
        cheapest = torch.where(allowed[:, SHARED].cpu(), unit, torch.inf).minimum(skip)
        return self.base_ms + float(cheapest.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"version": TABLE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        data = dict(data)
        data.pop("version", None)
        return cls(**data)


def ancestor_matrix(ancestors: list[list[int]] | list[set[int]]) -> torch.Tensor:
    """(units, units) float matrix, 1 where the column's unit feeds the row's."""
    matrix = torch.zeros(len(ancestors), len(ancestors), dtype=torch.float64)
    for u, feeding in enumerate(ancestors):
        matrix[u, list(feeding)] = 1
    return matrix


def model_ancestors(model: SuperModel) -> list[list[int]]:
    return [sorted(a) for a in unit_ancestors(model.plan, len(model.units))]


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


def _signature(model: SuperModel) -> list:
    """What the timings depend on in the model: unit operators, shapes and weights' shapes,
    skips, parameter-free operators and heads."""
    units = []
    for unit, branches in zip(model.graph.units, model.units):
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


CALIBRATION = {"all-shared": SHARED, "all-specific": SPECIFIC, "all-skip": SKIP}


class _Segment(nn.Module):
    """One branch of a unit followed by the parameter-free operators up to the next unit, cut
    out of the all-shared derived model: what one run of that branch costs in context
    (onnxruntime fuses a convolution with the activation after it, and a skipped unit leaves
    that activation to run on its own)."""

    def __init__(self, derived, steps, branch: nn.Module, inputs, consts, outputs) -> None:
        super().__init__()
        self.derived, self.branch = derived, branch
        self.steps, self.inputs, self.consts, self.outputs = steps, inputs, consts, outputs

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vals = {**self.consts, **dict(zip(self.inputs, xs))}
        self.derived.run_step(self.steps[0], vals, self.branch)
        for step in self.steps[1:]:
            self.derived.run_step(step, vals)
        return tuple(vals[s] for s in self.outputs)


def _segments(derived, vals: list) -> dict[int, tuple[list, list[int], dict, list[int]]]:
    """Per unit: its steps in the all-shared derived model (the unit, then the operators up
    to the next unit), the tensor slots they read from outside, other values they read, and
    the slots read after them."""
    starts = {
        i: int(derived.sources[step.target].split(".")[1])
        for i, step in enumerate(derived.steps)
        if step.kind == "op" and derived.sources.get(step.target, "").startswith("units.")
    }
    positions = sorted(starts)
    out = {}
    for k, i in enumerate(positions):
        end = positions[k + 1] if k + 1 < len(positions) else len(derived.steps)
        steps = derived.steps[i:end]
        made = {step.out for step in steps}
        read = list(dict.fromkeys(s for step in steps for s in step.slots if s not in made))
        later = {s for step in derived.steps[end:] for s in step.slots}
        later |= {s for row in derived.outputs for s in row}
        tensors = [s for s in read if isinstance(vals[s], torch.Tensor)]
        consts = {s: vals[s] for s in read if s not in tensors}
        outputs = [
            step.out
            for step in steps
            if step.out in later and isinstance(vals[step.out], torch.Tensor)
        ]
        out[starts[i]] = (steps, tensors, consts, outputs or [steps[-1].out])
    return out


class _Timer:
    """onnxruntime sessions of small models, each timed on its own and warm (worker threads
    not spinning between calls, as in the calibration), minus the time of a call that only
    copies the first input (an Identity session), so that per-call overhead is not counted
    as compute."""

    def __init__(self, providers: list[str], threads: int) -> None:
        self.providers, self.threads = providers, threads
        self.calls: dict[str, Any] = {}
        self.baseline_of: dict[str, str] = {}

    def add(self, name: str, module: nn.Module, inputs: list[torch.Tensor]) -> None:
        self.calls[name] = self._call(module, inputs)
        null = f"identity{tuple(inputs[0].shape)}"
        if null not in self.calls:
            self.calls[null] = self._call(nn.Identity(), inputs[:1])
        self.baseline_of[name] = null

    def _call(self, module: nn.Module, inputs: list[torch.Tensor]):
        names = [f"x{i}" for i in range(len(inputs))]
        with torch.no_grad():
            proto = trace_to_onnx(module.eval(), inputs, names, opset=OPSET)
        sess = session(proto, self.providers, self.threads, spinning=False)
        kept = {i.name for i in sess.get_inputs()}
        feed = {n: x.detach().numpy() for n, x in zip(names, inputs) if n in kept}
        return bound_call(sess, feed)[0]

    def medians_ms(self, repeats: int, warmup: int) -> dict[str, float]:
        ms = {name: median_seconds(fn, repeats, warmup) * 1e3 for name, fn in self.calls.items()}
        return {name: max(ms[name] - ms[null], 0.0) for name, null in self.baseline_of.items()}


def _time_models(models: dict, providers, threads, batch, repeats, warmup) -> dict[str, float]:
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


def measure_latency_table(
    model: SuperModel,
    provider: str = "auto",
    batch: int = 1,
    threads: int = 0,
    repeats: int = 30,
    warmup: int = 5,
    progress: bool = True,
) -> LatencyTable:
    """Time every unit's branch and projection skip in context (`_Segment`, exported as the
    derived model is), then the all-shared, all-specific and all-skip models, and fit the
    table's base and scale to them. Units that cannot be cut out get their MACs times the
    measured ms per MAC."""
    providers = resolve_providers(provider)
    device = device_name(providers)
    if not all(isinstance(d, int) for d in model.graph.input_shape[1:]):
        raise ConfigError(
            f"{model.graph.source}: input size {list(model.graph.input_shape)} is symbolic; "
            "latency is measured at a fixed image size: export the backbone with one."
        )
    timer = _Timer(providers, threads)
    models = {  # copies on the CPU, in eval mode: the model being trained stays untouched
        n: derive(model, model.uniform_policy(b)).cpu().eval() for n, b in CALIBRATION.items()
    }
    shared = models["all-shared"]
    with torch.no_grad():
        vals = shared.values(torch.randn(batch, *model.graph.input_shape[1:]), keep=True)
    for u, (steps, inputs, consts, outputs) in tqdm(
        _segments(shared, vals).items(), desc="latency table", disable=not progress, leave=False
    ):
        branches = model.units[u]
        kinds = {"unit": branches.shared}
        if model.branch_mask[u, SKIP]:
            kinds["skip"] = branches.skip
        for kind, branch in kinds.items():
            branch = one_row(copy.deepcopy(branch).cpu(), 0)
            segment = _Segment(shared, steps, branch, inputs, consts, outputs)
            try:
                timer.add(f"{kind}{u}", segment, [vals[s] for s in inputs])
            except Exception:  # noqa: BLE001 - such a unit is estimated from its MACs
                continue
    ms = timer.medians_ms(repeats, warmup)
    measured = _time_models(models, providers, threads, batch, repeats, warmup)
    unit_ms = _fill_unknown(model, ms)
    skip_ms = [ms.get(f"skip{u}", 0.0) for u in range(len(model.units))]
    ancestors = model_ancestors(model)
    unit, skip = (torch.tensor(v, dtype=torch.float64) for v in (unit_ms, skip_ms))
    anc = ancestor_matrix(ancestors)
    sums = {}
    for name, derived in models.items():
        probs = torch.nn.functional.one_hot(torch.tensor(derived.policy.choices), 3).double()
        sums[name] = (
            float(expected_cost(probs, unit, torch.zeros_like(skip), anc)),
            float(expected_cost(probs, torch.zeros_like(unit), skip, anc)),
        )
    base, scale, skip_scale = _fit([sums[n] for n in models], [measured[n] for n in models])
    return LatencyTable(
        key=table_key(model, device, providers, batch, threads),
        device=device,
        providers=providers,
        batch=batch,
        threads=threads,
        unit_ms=unit_ms,
        skip_ms=skip_ms,
        ancestors=ancestors,
        base_ms=base,
        scale=scale,
        skip_scale=skip_scale,
        calibration={
            **{f"measured_{k}_ms": v for k, v in measured.items()},
            **{f"units_{k}_ms": v[0] for k, v in sums.items()},
            **{f"skips_{k}_ms": v[1] for k, v in sums.items()},
        },
    )


def _fill_unknown(model: SuperModel, ms: dict[str, float]) -> list[float]:
    macs = [u.macs for u in model.graph.units]
    timed = [(ms[f"unit{u}"], macs[u]) for u in range(len(macs)) if f"unit{u}" in ms]
    per_mac = sum(t for t, _ in timed) / max(sum(m for _, m in timed), 1) if timed else 0.0
    return [ms.get(f"unit{u}", per_mac * macs[u]) for u in range(len(macs))]


def _fit(sums: list[tuple[float, float]], measured: list[float]) -> tuple[float, float, float]:
    """(base ms, scale, skip scale) of measured = base + scale * units + skip_scale * skips
    by least squares; with one scale for both where that fit is degenerate (no unit can be
    skipped) or gives a scale <= 0. The base may be negative: a unit timed on its own pays
    per-call costs that it does not pay inside a whole graph."""
    units, skips = np.array(sums).T
    y = np.array(measured)
    ones = np.ones_like(y)
    for columns in ((ones, units, skips), (ones, units + skips)):
        x = np.stack(columns, axis=1)
        if np.linalg.matrix_rank(x) < x.shape[1]:
            continue
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        if (coef[1:] > 0).all():
            return float(coef[0]), float(coef[1]), float(coef[-1])
    total = units + skips
    scale = float(total @ y / max(total @ total, 1e-12))
    return 0.0, scale, scale


def latency_table(
    model: SuperModel,
    provider: str = "auto",
    batch: int = 1,
    threads: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> LatencyTable:
    """The latency table of `model` on this machine: read from the cache (per device,
    provider, batch, threads and model structure) or measured and cached."""
    if batch < 1 or threads < 0:
        raise ConfigError("latency table: latency_batch must be >= 1 and latency_threads >= 0.")
    providers = resolve_providers(provider)
    key = table_key(model, device_name(providers), providers, batch, threads)
    path = Path(cache_dir) if cache_dir else default_cache() / "latency"
    path = path / f"{key}.json"
    if path.is_file():
        try:
            return LatencyTable.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError):
            pass  # an older or damaged table is measured again
    table = measure_latency_table(model, provider, batch, threads, progress=progress)
    atomic_write_text(path, json.dumps(table.to_dict(), indent=1))
    return table


def describe_table(table: LatencyTable, model: SuperModel) -> dict[str, Any]:
    """What a table predicts for `model`, as plain data: per unit the branch and skip ms
    (scaled, as the regulariser counts them), and the all-shared, all-specific and fastest
    models' predicted ms (the range a latency budget can ask for)."""
    unit, skip = table.costs()
    predicted = {
        name: table.predict(model.choices_of(model.uniform_policy(branch)))
        for name, branch in CALIBRATION.items()
    }
    return {
        **{k: getattr(table, k) for k in ("device", "providers", "batch", "threads", "key")},
        "predicted_ms": {**predicted, "fastest": table.fastest(model.branch_mask)},
        "measured_ms": {
            k.removeprefix("measured_").removesuffix("_ms"): v
            for k, v in table.calibration.items()
            if k.startswith("measured_")
        },
        "base_ms": table.base_ms,
        "units": [
            {
                "unit": u.name,
                "op": u.op_type,
                "ms": float(unit[i]),
                "skip_ms": float(skip[i]) if model.branch_mask[i, SKIP] else None,
            }
            for i, u in enumerate(model.graph.units)
        ],
    }


def format_table(info: dict[str, Any]) -> str:
    """`describe_table`'s data for the terminal."""
    p, m = info["predicted_ms"], info["measured_ms"]
    lines = [
        f"device         {info['device']} ({info['providers'][0]}, batch {info['batch']}, "
        f"threads {info['threads'] or 'default'})",
        f"predicted ms   all-shared {p['all-shared']:.3f} (measured {m['all-shared']:.3f}), "
        f"all-specific {p['all-specific']:.3f} (measured {m['all-specific']:.3f}), "
        f"fastest {p['fastest']:.3f}",
        f"base ms        {info['base_ms']:.3f} (stem, heads, per-call cost)",
        "",
        f"{'#':>3}  {'unit':<40} {'op':<10} {'ms':>8} {'skip ms':>8}",
    ]
    for i, r in enumerate(info["units"]):
        skip = "-" if r["skip_ms"] is None else f"{r['skip_ms']:.4f}"
        lines.append(f"{i:>3}  {r['unit'][-40:]:<40} {r['op']:<10} {r['ms']:>8.4f} {skip:>8}")
    return "\n".join(lines)


def fit_to_budget(
    table: LatencyTable,
    choices: list[list[int]],
    logits: torch.Tensor,
    budget_ms: float,
) -> tuple[list[list[int]], int]:
    """The policy nearest to `choices` that the table predicts within `budget_ms`: while over
    it, give every task the same branch (shared or skip) at the unit where that saves the most
    predicted ms per unit of log-probability given up (by the policy `logits`, masked);
    returns the choices and the number of units changed. Stops where no such change saves
    time (a budget below the fastest model is refused before the search)."""
    logp = torch.log_softmax(logits.detach().double().cpu(), -1)
    allowed = torch.isfinite(logp).all(0)  # (units, 3): branches every task may take
    choices = [list(row) for row in choices]
    current = table.predict(choices)
    changed = 0
    while current > budget_ms:
        best = None
        for u in range(len(choices[0])):
            for branch in (SHARED, SKIP):
                if not allowed[u, branch] or all(row[u] == branch for row in choices):
                    continue
                trial = [row[:u] + [branch] + row[u + 1 :] for row in choices]
                saved = current - table.predict(trial)
                if saved <= 1e-9:
                    continue
                lost = sum(
                    float(logp[t, u, row[u]] - logp[t, u, branch]) for t, row in enumerate(choices)
                )
                score = saved / (max(lost, 0.0) + 1e-3)
                if best is None or score > best[0]:
                    best = (score, trial, current - saved)
        if best is None:
            break
        _, choices, current = best
        changed += 1
    return choices, changed
