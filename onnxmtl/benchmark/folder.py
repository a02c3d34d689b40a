"""A bench folder: the measurements as JSON and markdown, with their PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from onnxmtl.benchmark.plots import latency_bars, policy_heatmap
from onnxmtl.benchmark.result import BenchResult
from onnxmtl.io_utils import atomic_write_text


def model_names(paths: Sequence[Path]) -> dict[str, Path]:
    """Each file under its stem, or under folder/stem for all when two stems are the same."""
    names = [p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.stem}" for p in paths]
    return dict(zip(names, paths))


def write_bench(result: BenchResult, table: str, out: Path) -> list[str]:
    """Write `result` (bench.json), its markdown `table` (bench.md), latency bars and a policy
    heat map per model that carries a policy into `out`; the names of the plots written."""
    atomic_write_text(out / "bench.json", json.dumps(result.to_dict(), indent=1))
    atomic_write_text(out / "bench.md", table + "\n")
    latency_bars(result, out / "latency.png")
    plots = ["latency.png"]
    for name, info in result.models.items():
        if info.policy:
            plot = f"policy_{name.replace('/', '_')}.png"
            policy_heatmap(info.policy, out / plot, title=f"{name}: policy")
            plots.append(plot)
    return plots
