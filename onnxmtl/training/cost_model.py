"""`CostModel`: what the search's cost regulariser takes from a cost (parameters, MACs,
measured latency or a registered one). It is declared here, where it is used, so that the
trainer is given a cost model and imports none of the later stages that build one
(`onnxmtl.cost`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from onnxmtl.compiler import Policy


class CostModel(Protocol):
    """Per-unit costs of one supermodel, and what the search does with them at its end.

    `unit` and `skip` (units,) are one run of each unit's branch (a shared branch, or one
    task's copy) and of its skip. `ancestors` (units, units) is 1 where the column's unit
    feeds the row's, so that runs are counted as the derived model makes them; None counts
    the copies a policy keeps (parameters). `base` is the cost outside the units (stem,
    heads, per-call overhead). `budget` is the fraction of the all-specific cost (base
    included) above which the search is penalised; None penalises the whole cost. `logged`,
    where set, names the log field that records the current policy's predicted cost."""

    unit: torch.Tensor
    skip: torch.Tensor
    ancestors: torch.Tensor | None
    base: float
    budget: float | None
    logged: str | None

    def fit(self, policy: Policy, logits: torch.Tensor) -> Policy:
        """The derived `policy` brought within a hard budget, giving up as little of the
        masked policy `logits` as it can; `policy` itself where the cost has no such budget."""
        ...

    def write_report(self, run_dir: Path, policy: Policy, searched: Policy) -> None:
        """Write into `run_dir` what the cost predicts for the derived `policy` and for
        `searched` (the policy before `fit`); nothing where the cost has nothing to report."""
        ...
