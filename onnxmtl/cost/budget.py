"""Fitting a derived policy to a latency budget: the hard deadline the soft penalty of the
search only steers towards."""

from __future__ import annotations

import torch

from onnxmtl.compiler import SHARED, SKIP
from onnxmtl.cost.table import LatencyTable


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
