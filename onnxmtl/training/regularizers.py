"""Policy regularisers: a weighted sharing prior (AutoMTL's weights by depth, or weights
from the tasks' measured gradient conflict), and the derived policy as values with a gradient
(the cost term itself is `onnxmtl.compiler.policy_cost`)."""

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
