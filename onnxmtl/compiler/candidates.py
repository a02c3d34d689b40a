"""The options a selection search chooses among for each task: where its chain leaves the
shared trunk (the last k units owned or skipped, k on a ladder that climbs the whole
backbone), all shared, or the row the gradient search derived for it. A candidate policy
gives each task one option, so tasks may leave the trunk at different depths and in
different ways, which no single hand-made `last-k` policy does."""

from __future__ import annotations

from collections.abc import Sequence

from onnxmtl.compiler.baseline_policies import last_k_row
from onnxmtl.compiler.policy import SHARED, Policy
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.errors import ConfigError

SEARCHED = "searched"  # the option of each task's row of the gradient search's policy


def cut_depths(units: int) -> list[int]:
    """The ladder of k: 1, 2, 3, then half as many again each rung (rounded up), below
    `units` (one unit stays shared): fine near the output, where hand-made policies cut,
    and coarse deep in the backbone, where a rung apart matters less."""
    depths: list[int] = []
    k = 1
    while k < units:
        depths.append(k)
        k = k + 1 if k < 3 else -(-3 * k // 2)
    return depths


def task_options(model: SuperModel, searched: Policy | None = None) -> dict[str, list[list[int]]]:
    """Each option by name ('all-shared', 'own-last-K', 'skip-last-K', and `SEARCHED` when a
    searched policy is given), as every task's row under it; a skip-last option whose rows
    equal an own-last one (a backbone without skips) is left out."""
    tasks, units = len(model.task_names), len(model.unit_names)
    options: dict[str, list[list[int]]] = {"all-shared": [[SHARED] * units for _ in range(tasks)]}
    seen = {tuple(options["all-shared"][0])}
    for k in cut_depths(units):
        for how in ("own", "skip"):
            row = last_k_row(model, k, how)
            if tuple(row) not in seen:
                seen.add(tuple(row))
                options[f"{how}-last-{k}"] = [list(row) for _ in range(tasks)]
    if searched is not None:
        model.choices_of(searched)
        options[SEARCHED] = [list(row) for row in searched.choices]
    return options


def compose(model: SuperModel, options: dict[str, list[list[int]]], picks: Sequence[str]) -> Policy:
    """The policy in which task t takes its row of option `picks[t]`."""
    if len(picks) != len(model.task_names):
        raise ConfigError(
            f"a candidate picks {len(picks)} option(s) for {len(model.task_names)} task(s)."
        )
    unknown = sorted(set(picks) - set(options))
    if unknown:
        raise ConfigError(f"no option {', '.join(unknown)}; options are {', '.join(options)}.")
    choices = [list(options[name][t]) for t, name in enumerate(picks)]
    return Policy(model.task_names, model.unit_names, choices, method="selected")
