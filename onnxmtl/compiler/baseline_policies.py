"""The fixed policies a person would try without a search, by name: the baselines every
searched policy is judged against."""

from __future__ import annotations

import re

import torch

from onnxmtl.compiler.policy import SHARED, SKIP, SPECIFIC, Policy
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.errors import ConfigError

LAST_K = (1, 2, 3)  # the depths of the hand-made "last k units" policies
LAST_K_POLICIES = tuple(f"{how}-last-{k}" for how in ("own", "skip") for k in LAST_K)
POLICY_BASELINES = ("all-shared", "random", *LAST_K_POLICIES)  # one model, one fixed policy
_LAST_K = re.compile(r"(own|skip)-last-([1-9][0-9]*)")


def last_k_row(model: SuperModel, k: int, how: str) -> list[int]:
    """One task's choices: every unit shared but the last `k`, which it owns (`how` 'own') or
    skips ('skip'; a unit that offers no skip is owned instead, so it is still not shared)."""
    if how not in ("own", "skip"):
        raise ConfigError(f"last-k policy: how={how!r}; expected 'own' or 'skip'.")
    units = len(model.unit_names)
    if not 0 <= k <= units:
        raise ConfigError(f"last-k policy: k={k}, but the backbone has {units} unit(s).")
    mask = model.branch_mask
    row = [SHARED] * (units - k)
    for u in range(units - k, units):
        row.append(SKIP if how == "skip" and bool(mask[u, SKIP]) else SPECIFIC)
    return row


def last_k_policy(model: SuperModel, k: int, how: str) -> Policy:
    """Every task shares all but the last `k` units, which it owns or skips (`last_k_row`)."""
    if k < 1:
        raise ConfigError(f"last-k policy: k={k}; expected at least 1.")
    row = last_k_row(model, k, how)
    choices = [list(row) for _ in model.task_names]
    return Policy(model.task_names, model.unit_names, choices, method=f"{how}-last-{k}")


def random_policy(model: SuperModel, seed: int) -> Policy:
    """Each (task, unit) takes one of its available branches uniformly at random."""
    gen = torch.Generator().manual_seed(seed)
    probs = model.branch_mask.float().expand(len(model.tasks), -1, -1)
    choices = torch.multinomial(probs.reshape(-1, 3), 1, generator=gen).view(probs.shape[:2])
    return Policy(model.task_names, model.unit_names, choices.tolist(), "random", seed)


def unshared_pairs(policy: Policy) -> int:
    """How many (task, unit) pairs do not take the shared branch."""
    return sum(c != SHARED for row in policy.choices for c in row)


def matched_random_policy(model: SuperModel, pairs: int, seed: int) -> Policy:
    """A policy of the same size as a searched one: `pairs` (task, unit) pairs drawn uniformly
    at random leave the shared branch, each for one of its other available branches at
    random; every other pair is shared."""
    mask = model.branch_mask.bool()
    tasks, units = len(model.task_names), len(model.unit_names)
    open_pairs = [
        (t, u)
        for t in range(tasks)
        for u in range(units)
        if bool(mask[u, SPECIFIC]) or bool(mask[u, SKIP])
    ]
    if not 0 <= pairs <= len(open_pairs):
        raise ConfigError(
            f"matched random policy: {pairs} unshared pair(s) asked, {len(open_pairs)} can be."
        )
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(open_pairs), generator=gen)[:pairs].tolist()
    choices = [[SHARED] * units for _ in range(tasks)]
    for i in chosen:
        t, u = open_pairs[i]
        options = [b for b in (SPECIFIC, SKIP) if bool(mask[u, b])]
        choices[t][u] = options[int(torch.randint(len(options), (1,), generator=gen))]
    return Policy(model.task_names, model.unit_names, choices, "random-matched", seed)


def baseline_policy(model: SuperModel, name: str, seed: int) -> Policy:
    """The fixed policy of baseline `name` (one of `POLICY_BASELINES`, or any
    'own-last-K' / 'skip-last-K') for `model`."""
    if name == "all-shared":
        return model.uniform_policy(SHARED)
    if name == "random":
        return random_policy(model, seed)
    match = _LAST_K.fullmatch(name)
    if match:
        return last_k_policy(model, int(match.group(2)), match.group(1))
    raise ConfigError(
        f"no baseline policy {name!r}; expected one of {', '.join(POLICY_BASELINES)}."
    )


def is_policy_baseline(name: str) -> bool:
    """Whether `name` is a baseline with one fixed policy (`baseline_policy` knows it)."""
    return name in ("all-shared", "random") or _LAST_K.fullmatch(name) is not None
