"""Policy regularisers: AutoMTL's depth-weighted sharing prior and a branch-cost term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxmtl.compiler import SHARED, SKIP, SPECIFIC


def sharing_regularizer(
    probs: torch.Tensor, depths: torch.Tensor, scale: float = 6.0
) -> torch.Tensor:
    """AutoMTL's 'design 3', summed over tasks: for task t,
    R_t = sum_u ((L - d_u) / L) * [softplus(s (p_specific - p_shared)) + softplus(s (p_skip -
    p_shared))], with L the deepest unit's depth. Shallow units weigh most; the deepest none.

    `probs` (tasks, units, 3) are relaxed branch weights; `depths` (units,) unit depths.
    """
    deepest = depths.max().clamp_min(1)
    weight = (deepest - depths).float() / deepest
    p0 = probs[..., SHARED]
    penalty = F.softplus(scale * (probs[..., SPECIFIC] - p0)) + F.softplus(
        scale * (probs[..., SKIP] - p0)
    )
    return (penalty * weight).sum()


def expected_cost(probs: torch.Tensor, unit_cost: torch.Tensor, skip_cost: torch.Tensor):
    """Expected cost of the derived model: a shared branch (or skip) is paid once if any
    task takes it; a specific branch once per task that takes it."""
    shared_used = 1 - torch.prod(1 - probs[..., SHARED], dim=0)
    skip_used = 1 - torch.prod(1 - probs[..., SKIP], dim=0)
    specific = probs[..., SPECIFIC].sum(0)
    return (unit_cost * (shared_used + specific) + skip_cost * skip_used).sum()


def cost_regularizer(
    probs: torch.Tensor,
    unit_cost: torch.Tensor,
    skip_cost: torch.Tensor,
    budget: float | None = None,
) -> torch.Tensor:
    """The expected cost as a fraction of the all-specific model's; with a `budget` (same
    unit), only the excess over it is penalised (squared, so it vanishes smoothly)."""
    full = unit_cost.sum() * probs.shape[0]
    ratio = expected_cost(probs, unit_cost, skip_cost) / full.clamp_min(1)
    if budget is None:
        return ratio
    return F.relu(ratio - budget) ** 2 * 100
