"""The cost of a policy, as the search and every cost model reckon it: how many times the
derived model runs each branch (`expected_runs`), its expected cost, the all-specific model's,
the budget regulariser, and `CostModel`, what carries per-unit costs to the trainer. Torch and
a policy only: the search (training) and the measured costs (`onnxmtl.cost`) both read it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from onnxmtl.compiler.policy import SHARED, SKIP, SPECIFIC, Policy


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


def together(probs: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
    """(tasks, tasks, units): the probability that two tasks carry the same value into a unit,
    that is, took the same shared branch or the same skip at every unit feeding it.
    `ancestors` (units, units) is 1 where the column's unit feeds the row's. The product over
    ancestors keeps its exact gradient where a factor is 0: for tasks that one unit alone
    keeps apart, it is what tells the search that re-joining there saves every later run."""
    same = torch.einsum("avb,cvb->acv", probs[..., [SHARED, SKIP]], probs[..., [SHARED, SKIP]])
    feeds = ancestors.bool()[None, None]
    return torch.where(feeds, same[:, :, None, :], torch.ones((), dtype=same.dtype)).prod(-1)


def expected_runs(probs: torch.Tensor, ancestors: torch.Tensor | None = None) -> torch.Tensor:
    """(units, 3): how many times one forward of the derived model runs each unit's shared
    branch, task copies and skip. A shared branch (or skip) runs once per distinct value the
    tasks taking it carry, so a branch-off makes every later shared unit run again. Without
    `ancestors` every task carries the same value: the count of copies a policy keeps
    (parameters). Exact for a one-hot policy; for relaxed ones, tasks are grouped pairwise."""
    specific = probs[..., SPECIFIC].sum(0)
    if ancestors is None:
        shared = 1 - torch.prod(1 - probs[..., SHARED], dim=0)
        skip = 1 - torch.prod(1 - probs[..., SKIP], dim=0)
        return torch.stack([shared, specific, skip], dim=-1)
    joint = together(probs, ancestors)
    earlier = torch.ones(probs.shape[0], probs.shape[0]).tril(-1).to(probs)
    runs = []
    for branch in (SHARED, SKIP):
        p = probs[..., branch]  # (tasks, units)
        meets = p[None, :, :] * joint * earlier[..., None]  # [t, t', u]: t' < t takes it with t
        runs.append((p * torch.prod(1 - meets, dim=1)).sum(0))
    return torch.stack([runs[0], specific, runs[1]], dim=-1)


def expected_cost(
    probs: torch.Tensor,
    unit_cost: torch.Tensor,
    skip_cost: torch.Tensor,
    ancestors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Expected cost of the derived model: each unit's cost times the runs of its shared
    branch and task copies, plus its skip's cost times the skip's runs (`expected_runs`:
    with `ancestors` for compute, without for parameters)."""
    runs = expected_runs(probs, ancestors)
    return (unit_cost * (runs[:, SHARED] + runs[:, SPECIFIC]) + skip_cost * runs[:, SKIP]).sum()


def full_cost(unit_cost: torch.Tensor, num_tasks: int, base: float = 0.0) -> torch.Tensor:
    """The all-specific model's cost (every task its own copy of every unit) plus `base`: the
    unit a cost budget is a fraction of."""
    return unit_cost.sum() * num_tasks + base


def cost_regularizer(
    probs: torch.Tensor,
    unit_cost: torch.Tensor,
    skip_cost: torch.Tensor,
    budget: float | None = None,
    ancestors: torch.Tensor | None = None,
    base: float = 0.0,
) -> torch.Tensor:
    """The expected cost (plus a fixed `base`) as a fraction of the all-specific model's;
    with a `budget` (same unit), only the excess over it, linearly. Its gradient stays as
    small as the plain cost's: early in a search the argmax policy is noise, far over any
    budget, and a squared excess then gave gradients that filled Adam's second moment and
    froze the policy logits for the rest of the search."""
    full = full_cost(unit_cost, probs.shape[0], base)
    ratio = (expected_cost(probs, unit_cost, skip_cost, ancestors) + base) / full.clamp_min(1e-9)
    if budget is None:
        return ratio
    return F.relu(ratio - budget)
