"""What a latency table predicts for a model, as plain data and for the terminal (`onnxmtl
latency`)."""

from __future__ import annotations

from typing import Any

from onnxmtl.compiler import SKIP, SuperModel
from onnxmtl.cost.table import CALIBRATION, LatencyTable


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
