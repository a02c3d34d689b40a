"""The search's schedules over its policy steps: the Gumbel temperature and the policy
logits' learning rate, both spanning the search whatever its length."""

from __future__ import annotations

import math

from onnxmtl.training.config.sections import SearchOptions


def search_progress(search: SearchOptions, policy_step: int) -> float:
    """How far policy step `policy_step` (0-based) is through the search's policy steps: 0 at
    the first, 1 at the last."""
    last = search.steps * search.policy_steps - 1
    return min(policy_step / last, 1.0) if last > 0 else 0.0


def tau_at(search: SearchOptions, policy_step: int) -> float:
    """The Gumbel temperature of policy step `policy_step`: `tau` at the first, `tau_end` at
    the last, geometric in between (a constant factor per step)."""
    return search.tau * (search.tau_end / search.tau) ** search_progress(search, policy_step)


def policy_lr_at(search: SearchOptions, policy_step: int) -> float:
    """The policy logits' learning rate at policy step `policy_step`: `policy_lr`, or under
    the 'cosine' schedule `policy_lr` decayed to 0 at the last policy step."""
    if search.policy_lr_schedule == "constant":
        return search.policy_lr
    return search.policy_lr * 0.5 * (1 + math.cos(math.pi * search_progress(search, policy_step)))
