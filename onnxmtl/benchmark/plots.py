"""PNG plots: latency bars per model, and a policy heat map (tasks x units)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onnxmtl.benchmark.result import BenchResult
from onnxmtl.compiler.policy import BRANCHES
from onnxmtl.io_utils import atomic_write

BRANCH_COLOURS = ("#4c72b0", "#dd8452", "#d0d0d0")  # shared, specific, skip


def figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8)):
    """A figure and its axes, made without pyplot: no global backend or figure registry is
    touched, so importing onnxmtl leaves a user's matplotlib setup as it was."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write `fig` as a PNG atomically."""
    atomic_write(
        Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    )


def latency_bars(result: BenchResult, path: str | Path) -> None:
    """p50 latency per model (bars) with the p90 as an error bar, one group per batch size."""
    models = list(result.models)
    batches = result.settings.batch_sizes
    rows = {(r.model, r.batch): r for r in result.latency}
    fig, ax = figure(figsize=(max(5, 1.2 * len(models) * len(batches) + 2), 3.6))
    width = 0.8 / len(batches)
    x = np.arange(len(models))
    for i, batch in enumerate(batches):
        p50 = [rows[m, batch].p50_ms for m in models]
        p90 = [rows[m, batch].p90_ms for m in models]
        err = np.array([np.zeros(len(models)), np.subtract(p90, p50)])
        ax.bar(x + i * width, p50, width, yerr=err, capsize=3, label=f"batch {batch}")
    ax.set_xticks(x + width * (len(batches) - 1) / 2, models, rotation=20, ha="right")
    ax.set_ylabel("latency, ms (p50, bar to p90)")
    ax.set_title(f"onnxruntime {', '.join(result.settings.providers)}")
    if len(batches) > 1:
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def policy_heatmap(policy: dict[str, Any], path: str | Path, title: str = "policy") -> None:
    """Tasks x units coloured by branch: shared, task-specific, skipped."""
    choices = np.array(policy["choices"])
    tasks, units = choices.shape
    fig, ax = figure(figsize=(max(6.0, min(18.0, 2 + 0.12 * units)), 1.2 + 0.45 * tasks))
    ax.imshow(choices, cmap=ListedColormap(BRANCH_COLOURS), vmin=0, vmax=2, aspect="auto")
    ax.set_yticks(range(tasks), policy["tasks"])
    ax.set_xlabel(f"unit (input to output, {units} units)")
    counts = [int((choices == b).sum()) for b in range(3)]
    handles = [
        Rectangle((0, 0), 1, 1, color=c, label=f"{name} ({n})")
        for c, name, n in zip(BRANCH_COLOURS, BRANCHES, counts)
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3)
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
