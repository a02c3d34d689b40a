"""Measuring a latency table: every unit's branch and skip timed in context, the calibration
models timed whole, and the table's coefficients fitted to them."""

from __future__ import annotations

import copy

import torch
from tqdm import tqdm

from onnxmtl.benchmark.bench import resolve_providers
from onnxmtl.compiler import SKIP, SuperModel
from onnxmtl.compiler.branches import one_row
from onnxmtl.compiler.policy_cost import expected_cost
from onnxmtl.cost.ancestors import ancestor_matrix, model_ancestors
from onnxmtl.cost.fit import fit_coefficients
from onnxmtl.cost.key import device_name, table_key
from onnxmtl.cost.segments import segments
from onnxmtl.cost.table import CALIBRATION, LatencyTable
from onnxmtl.cost.timing import Timer, time_models
from onnxmtl.derived import derive
from onnxmtl.errors import ConfigError


def measure_latency_table(
    model: SuperModel,
    provider: str = "auto",
    batch: int = 1,
    threads: int = 0,
    repeats: int = 30,
    warmup: int = 5,
    progress: bool = True,
) -> LatencyTable:
    """Time every unit's branch and projection skip in context (`Segment`, exported as the
    derived model is), then the all-shared, all-specific and all-skip models, and fit the
    table's base and scale to them. Units that cannot be cut out get their MACs times the
    measured ms per MAC."""
    providers = resolve_providers(provider)
    device = device_name(providers)
    sample = [d for d in model.graph.input_shape[1:] if isinstance(d, int)]
    if len(sample) != len(model.graph.input_shape) - 1:
        raise ConfigError(
            f"{model.graph.source}: input size {list(model.graph.input_shape)} is symbolic; "
            "latency is measured at a fixed image size: export the backbone with one."
        )
    timer = Timer(providers, threads)
    models = {  # copies on the CPU, in eval mode: the model being trained stays untouched
        n: derive(model, model.uniform_policy(b)).cpu().eval() for n, b in CALIBRATION.items()
    }
    sample_batch = torch.randn(batch, *sample)
    for u, segment in tqdm(
        segments(models["all-shared"], sample_batch).items(),
        desc="latency table",
        disable=not progress,
        leave=False,
    ):
        branches = model.units[u]
        kinds = {"unit": branches.shared}
        if model.branch_mask[u, SKIP]:
            kinds["skip"] = branches.skip
        for kind, branch in kinds.items():
            module = segment.module(one_row(copy.deepcopy(branch).cpu(), 0))
            try:
                timer.add(f"{kind}{u}", module, segment.inputs)
            except Exception:  # noqa: BLE001 - such a unit is estimated from its MACs
                continue
    ms = timer.medians_ms(repeats, warmup)
    measured = time_models(models, providers, threads, batch, repeats, warmup)
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
    base, scale, skip_scale = fit_coefficients(
        [sums[n] for n in models], [measured[n] for n in models]
    )
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
    """Per unit its timed ms, or for a unit that could not be timed its MACs times the timed
    units' ms per MAC."""
    macs = [u.macs for u in model.graph.units]
    timed = [(ms[f"unit{u}"], macs[u]) for u in range(len(macs)) if f"unit{u}" in ms]
    per_mac = sum(t for t, _ in timed) / max(sum(m for _, m in timed), 1) if timed else 0.0
    return [ms.get(f"unit{u}", per_mac * macs[u]) for u in range(len(macs))]
