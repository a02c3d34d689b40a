"""Policy regularisers: a weighted sharing prior (AutoMTL's weights by depth, or weights
from the tasks' measured gradient conflict) and a branch-cost term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxmtl.compiler import SHARED, SKIP, SPECIFIC


def sharing_regularizer(
    probs: torch.Tensor, weights: torch.Tensor, scale: float = 6.0
) -> torch.Tensor:
    """AutoMTL's 'design 3', summed over tasks: for task t,
    R_t = sum_u w_u * [softplus(s (p_specific - p_shared)) + softplus(s (p_skip - p_shared))].

    `probs` (tasks, units, 3) are relaxed branch weights; `weights` (units,) how hard each
    unit is pushed towards sharing (`depth_weights` or `conflict_weights`).
    """
    p0 = probs[..., SHARED]
    penalty = F.softplus(scale * (probs[..., SPECIFIC] - p0)) + F.softplus(
        scale * (probs[..., SKIP] - p0)
    )
    return (penalty * weights).sum()


def depth_weights(depths: torch.Tensor) -> torch.Tensor:
    """AutoMTL's prior: (L - d_u) / L with L the deepest unit's depth, so shallow units are
    pushed hardest towards sharing and the deepest not at all."""
    deepest = depths.max().clamp_min(1)
    return (deepest - depths).float() / deepest


def conflict_weights(ranking: list[int]) -> torch.Tensor:
    """A prior from the tasks themselves: units in `ranking`'s order (most conflicting
    first) get weights spread evenly from 0 to 1, so the unit whose shared weights the
    tasks pull apart most is not pushed towards sharing and the most agreeable one is
    pushed hardest, wherever they sit in the network."""
    weights = torch.zeros(len(ranking))
    if len(ranking) > 1:
        weights[ranking] = torch.arange(len(ranking), dtype=torch.float32) / (len(ranking) - 1)
    return weights


def current_policy(logits: torch.Tensor) -> torch.Tensor:
    """The policy the logits would derive now (one-hot argmax) as values, with the gradient
    of their softmax (straight-through): a cost of it is the derived model's cost, which the
    relaxed probabilities overstate (independently drawn tasks rarely stay together through
    many units), and it still moves the logits."""
    soft = torch.softmax(logits, -1)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft)
    return hard + soft - soft.detach()


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
