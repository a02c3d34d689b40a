"""What a supermodel offers, unit by unit: branches, parameters and MACs."""

from __future__ import annotations

import math
from typing import Any

from onnxmtl.compiler.branches import Projection, skip_cost
from onnxmtl.compiler.policy import SHARED, SKIP, SPECIFIC
from onnxmtl.compiler.supermodel import SuperModel


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def branch_costs(model: SuperModel) -> list[dict[str, Any]]:
    """Per unit: parameters and MACs per sample of its shared (= each specific) and skip
    branch, and what the skip is. The figures feed summaries and cost regularisers."""
    rows = []
    for u, unit in enumerate(model.graph.units):
        branches = model.unit_branches(u)
        renorm = branches.shared.renorm is not None
        out = math.prod(d for d in (unit.out_shape or ())[1:] if isinstance(d, int))
        skip = branches.skip
        skip_params, skip_macs = skip_cost(unit, skip)
        rows.append(
            {
                "unit": unit.name,
                "op": unit.op_type + (f"+{unit.norm}" if unit.norm else "") + ("+Renorm" * renorm),
                "out_shape": list(unit.out_shape or ()),
                "depth": unit.depth,
                "params": _numel(branches.shared),
                "macs": unit.macs + (out if renorm else 0),
                "skip": "none"
                if skip is None
                else ("projection" if isinstance(skip, Projection) else "identity"),
                "skip_params": skip_params,
                "skip_macs": skip_macs,
            }
        )
    return rows


def summarize(model: SuperModel) -> dict[str, Any]:
    """Totals and per-unit rows of `model`, as plain data (the CLI prints or dumps it)."""
    rows = branch_costs(model)
    heads = {name: _numel(h) for name, h in model.heads.items()}
    return {
        "model": model.graph.source,
        "tasks": [t.to_dict() for t in model.tasks],
        "units": rows,
        "num_units": len(rows),
        "renormalized": sum("+Renorm" in r["op"] for r in rows),
        "calibration": model.calibration,
        "skips": {k: sum(r["skip"] == k for r in rows) for k in ("identity", "projection", "none")},
        "shared_prefix": model.options.get("shared_prefix", 0),
        "params": {
            "total": _numel(model),
            "shared_branches": sum(r["params"] for r in rows),
            "specific_branches": sum(_numel(b.specific) for b in model.units),
            "skips": sum(r["skip_params"] for r in rows),
            "heads": heads,
            "other": sum(p.numel() for p in model.weights.parameters())
            + sum(_numel(m) for m in model.ops.values()),
            "policy_logits": model.policy_logits.numel(),
        },
        "macs": {
            "shared_branches": sum(r["macs"] for r in rows),
            "skips": sum(r["skip_macs"] for r in rows),
        },
    }


def format_summary(info: dict[str, Any]) -> str:
    """`summarize`'s data as a table for the terminal."""
    p = info["params"]
    tasks = ", ".join(f"{t['name']} ({t['kind']}, {t['num_outputs']})" for t in info["tasks"])
    lines = [
        f"supermodel     {info['model']}",
        f"tasks          {tasks}",
        f"units          {info['num_units']}   re-normalised {info['renormalized']} "
        f"(calibration: {info['calibration']})   skips: {info['skips']['identity']} identity, "
        f"{info['skips']['projection']} projection, {info['skips']['none']} none",
        f"params         total {p['total']:,} = shared {p['shared_branches']:,} + specific "
        f"{p['specific_branches']:,} + skips {p['skips']:,} + heads "
        f"{sum(p['heads'].values()):,} + other {p['other']:,} + logits {p['policy_logits']:,}",
        f"MACs           {info['macs']['shared_branches'] / 1e6:,.1f} M per sample per task "
        f"(skips {info['macs']['skips'] / 1e6:,.1f} M)",
        "",
        f"{'#':>3}  {'unit':<40} {'op':<28} {'depth':>5} {'params':>10} {'MACs':>10}  skip",
    ]
    for i, r in enumerate(info["units"]):
        skip = r["skip"] + (f" ({r['skip_params']:,})" if r["skip"] == "projection" else "")
        lines.append(
            f"{i:>3}  {r['unit'][-40:]:<40} {r['op'][:28]:<28} {r['depth']:>5} "
            f"{r['params']:>10,} {r['macs']:>10,}  {skip}"
        )
    return "\n".join(lines)


def describe_totals(info: dict[str, Any]) -> str:
    """`summarize`'s data in one phrase: tasks, units, re-normalisation and parameters."""
    return (
        f"{len(info['tasks'])} tasks, {info['num_units']} units "
        f"({info['renormalized']} re-normalised, calibration {info['calibration']}), "
        f"{info['params']['total']:,} parameters"
    )


def policy_params(model: SuperModel, choices: list[list[int]]) -> int:
    """Parameters of the multi-task model a policy implies: each unit's shared branch and
    projection skip once if any task takes it, its specific branch once per task taking it,
    plus the parameter-free part's loose weights and every head."""
    total = sum(p.numel() for p in model.weights.parameters())
    total += sum(_numel(m) for m in model.ops.values())
    total += sum(_numel(h) for h in model.heads.values())
    for u, branches in enumerate(model.units):
        taken = [row[u] for row in choices]
        unit = _numel(branches.shared)
        total += unit * (taken.count(SPECIFIC) + (SHARED in taken))
        total += _numel(branches.skip) if SKIP in taken else 0
    return total
