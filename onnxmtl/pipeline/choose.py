"""Which model to deploy: the best validation delta-m among the models within the budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from onnxmtl.training import SearchConfig


@dataclass(frozen=True)
class Candidate:
    """One model `run` trained, with what the choice reads of it."""

    name: str  # 'searched', 'all-shared' or 'single-task'
    val_delta_m: float  # against the reference models on the validation split, in %
    param_share: float | None  # parameters over the single-task models'
    latency_ms: float | None  # onnxruntime p50 at the budget's batch (single-task: the sum)
    within_budget: bool


@dataclass(frozen=True)
class Choice:
    """The model to deploy and why, with every candidate's figures."""

    model: str
    reason: str
    reference: str  # what validation delta-m is measured against
    budget: str  # the budget in words ('none' without one)
    candidates: list[Candidate]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _budget(config: SearchConfig) -> tuple[str, str, float] | None:
    """(kind, words, limit) of the user's budget: a parameter or MAC share, or a latency."""
    cost = config.cost
    if cost.latency_budget_ms is not None:
        return (
            "latency",
            f"{cost.latency_budget_ms:g} ms at batch {cost.latency_batch}",
            cost.latency_budget_ms,
        )
    if cost.name in ("params", "macs") and cost.budget is not None:
        words = f"{cost.name} <= {cost.budget:g} x the single-task models'"
        return cost.name, words, cost.budget
    return None


def choose_model(
    methods: dict[str, dict[str, Any]],
    latency: dict[str, float],
    config: SearchConfig,
    reference: str,
) -> Choice:
    """The candidate with the best validation delta-m (against `reference`) among those
    within the budget (ties: fewer parameters); when none fits, the cheapest one. `methods`
    are `run`'s entries (with 'val_delta_m', 'param_share', 'macs'), `latency` the p50 ms
    per method at the budget's batch size."""
    budget = _budget(config)
    single_macs = methods.get("single-task", {}).get("macs")
    candidates = []
    for name, entry in methods.items():
        share = entry.get("param_share")
        ms = latency.get(name)
        if budget is None:
            fits = True
        elif budget[0] == "latency":
            fits = ms is not None and ms <= budget[2]
        elif budget[0] == "params":
            fits = share is not None and share <= budget[2]
        else:
            fits = single_macs is not None and entry["macs"] / single_macs <= budget[2]
        candidates.append(Candidate(name, entry["val_delta_m"], share, ms, fits))
    fitting = [c for c in candidates if c.within_budget]
    words = "none" if budget is None else budget[1]
    if fitting:
        best = max(fitting, key=lambda c: (c.val_delta_m, -(c.param_share or 0.0)))
        others = ", ".join(f"{c.name} {c.val_delta_m:+.2f}%" for c in candidates if c is not best)
        scope = "of all models" if budget is None else f"of the models within {words}"
        reason = (
            f"the best validation delta-m {scope}: {best.val_delta_m:+.2f}% "
            f"({others or 'no other model'})"
        )
    else:
        assert budget is not None  # without a budget every candidate fits
        kind = budget[0]
        best = min(
            candidates,
            key=lambda c: (
                (c.latency_ms or float("inf"))
                if kind == "latency"
                else (c.param_share or float("inf"))
            ),
        )
        reason = f"no model fits {words}; {best.name} comes closest"
    return Choice(best.name, reason, reference, words, candidates)
