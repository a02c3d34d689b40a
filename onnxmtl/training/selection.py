"""Choosing the policy by measuring candidates rather than reading the logits.

Each option of `compiler.candidates` (every task leaving the shared trunk at one depth of a
ladder, owned or skipped, all shared, or the searched rows) is given to every task at once,
fine-tuned briefly from where the final model's post-training starts (`select_start`), and
scored per task on held-out data. Each task keeps its best `select_keep` options; their
combinations are fine-tuned three times as long and the best on the task-balanced delta-m
wins (successive halving). Every candidate sees the same batches from the same weights, so
what separates them is the policy, not the noise of a Gumbel sample. Started where the
final model starts, a candidate is the first steps of its final model: started from the
searched weights instead, the options ranked against their final models on development
seeds (docs/evidence.md, how the selection ranks the options).

The fine-tuning uses the first half of the training split (train1) and the scores the
second (train2): the validation split, on which `run` chooses among the searched model and
the baselines, takes no part in the choice.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from onnxmtl.compiler import Policy
from onnxmtl.compiler.candidates import SEARCHED, compose, task_options
from onnxmtl.tasks import delta_m, task_deltas
from onnxmtl.training.checkpoint import initial_weights
from onnxmtl.training.evaluate import evaluate
from onnxmtl.training.session import Session

Metrics = dict[str, dict[str, float]]
RUNG_GROWTH = 3  # the second rung fine-tunes this many times as long as the first
MAX_FINALISTS = 8  # combinations in the second rung at most (many tasks)
MAX_COMBINATIONS = 20_000  # combinations checked against a budget at most


@dataclass
class Trial:
    """One candidate's measurement: the option each task took, the fine-tuning steps, the
    tasks' metrics on the scoring data and its task-balanced delta-m against all-shared at
    the first rung."""

    picks: tuple[str, ...]
    steps: int
    metrics: Metrics
    delta_m: float | None = None


@dataclass
class Selection:
    """What the selection measured and chose, as selection.json records it."""

    options: list[str]
    first: list[Trial]
    second: list[Trial]
    chosen: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_policy(
    run: Session,
    searched: Policy,
    within_budget: Callable[[Policy], bool] = lambda policy: True,
) -> tuple[Policy, Selection]:
    """The candidate policy that scores best after brief fine-tuning (see the module), among
    those `within_budget`; the searched policy where no combination is. The model's weights
    and the loss weighting's are left as they were."""
    c = run.config.select
    model = run.model
    options = task_options(model, searched)
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(run.weighting.state_dict())
    kept_policy = run.policy
    names = list(options)
    bar = run.bar(len(names), "select")
    try:
        start = _candidate_start(run, saved[0]), saved[1]  # load_state_dict copies what it loads
        first = []
        steps = _steps(run, c.steps)
        for name in names:
            picks = (name,) * len(model.task_names)
            first.append(_trial(run, compose(model, options, picks), picks, steps, start))
            bar.update(1)
        reference = next(t.metrics for t in first if t.picks[0] == "all-shared")
        for trial in first:
            trial.delta_m = delta_m(trial.metrics, reference)
        finalists = _fitting_finalists(
            run, first, reference, c.keep, lambda p: within_budget(compose(model, options, p))
        )
        bar.total = len(names) + len(finalists)
        second = []
        for picks in finalists:
            longer = _steps(run, c.steps * RUNG_GROWTH)
            trial = _trial(run, compose(model, options, picks), picks, longer, start)
            trial.delta_m = delta_m(trial.metrics, reference)
            second.append(trial)
            bar.update(1)
    finally:
        bar.close()
        model.load_state_dict(saved[0])
        run.weighting.load_state_dict(saved[1])
        run.policy = kept_policy
        run.streams.pop("select", None)
    if not second:
        return searched, Selection(names, first, second, (SEARCHED,) * len(model.task_names))
    best = max(second, key=_score)
    return compose(model, options, best.picks), Selection(names, first, second, best.picks)


def _candidate_start(run: Session, current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights every candidate is fine-tuned from, so that a candidate is the first steps
    of its final model. With `select_start: final` (the default), where the final model's
    post-training starts: the backbone's and the heads' initial weights under
    `post_train_init: backbone`, the searched ones under 'search'. With `select_start:
    search`, the supermodel's; but where the final model post-trains from the backbone,
    every task's copy of a unit holds the shared copy's weights, as all copies start alike
    from the backbone, so that a copy the search trained for its task alone gives the
    options that own many units no head start (docs/concepts.md, the selection). `current` is
    a copy of the supermodel's weights; it is left as it is."""
    model = run.model
    from_backbone = run.config.post_train.init == "backbone"
    if run.config.select.start == "final" and from_backbone:
        logits = model.policy_logits.detach().clone()
        return initial_weights(run.folder.initial, model, {"policy_logits": logits})
    state = dict(current)
    if from_backbone:
        for u in range(len(model.units)):
            unit = model.unit_branches(u)
            for name, _ in unit.shared.named_parameters():
                for t in range(len(unit.specific)):
                    state[f"units.{u}.specific.{t}.{name}"] = state[f"units.{u}.shared.{name}"]
    return state


def _steps(run: Session, wanted: int) -> int:
    """A candidate's fine-tuning steps: `wanted`, but never more than the final model's own
    post-training, so that a short run's selection stays short."""
    return min(wanted, run.config.post_train.steps)


def _score(trial: Trial) -> float:
    """A trial's delta-m, with a missing or NaN one ranked last."""
    value = trial.delta_m
    return value if value is not None and not math.isnan(value) else -math.inf


def _finalists(
    run: Session, first: list[Trial], reference: Metrics, keep: int
) -> list[tuple[str, ...]]:
    """The combinations of each task's `keep` best options at the first rung, best first by
    the mean of their tasks' deltas there (what the combination would score if the tasks did
    not interact)."""
    tasks = run.model.task_names
    deltas = [task_deltas(trial.metrics, reference) for trial in first]
    per_task: list[list[tuple[float, str]]] = []
    for t, name in enumerate(tasks):
        scored = [(d.get(name, -math.inf), trial.picks[t]) for d, trial in zip(deltas, first)]
        scored.sort(key=lambda s: -s[0])
        per_task.append(scored[:keep])
    combos = [
        (sum(d for d, _ in combo) / len(tasks), tuple(n for _, n in combo))
        for combo in itertools.product(*per_task)
    ]
    combos.sort(key=lambda c: -c[0])
    return [picks for _, picks in combos]


def _fitting_finalists(
    run: Session,
    first: list[Trial],
    reference: Metrics,
    keep: int,
    fits: Callable[[tuple[str, ...]], bool],
) -> list[tuple[str, ...]]:
    """The second rung's combinations: those of each task's `keep` best options that `fits`
    (within the budget), best first, at most MAX_FINALISTS. Where none of them fits, each
    task's next best options join in, one more at a time, until some combination does: a
    budget then costs a task its best option, not the measured choice; as many as `keep`
    would have given are kept. Empty where no combination fits."""
    tasks = len(run.model.task_names)
    count = min(keep**tasks, MAX_FINALISTS)
    width = keep
    while True:
        fitting = [p for p in _finalists(run, first, reference, width) if fits(p)]
        wider = width + 1
        if fitting or width >= len(first) or wider**tasks > MAX_COMBINATIONS:
            return fitting[:count]
        width = wider


def _trial(
    run: Session,
    policy: Policy,
    picks: tuple[str, ...],
    steps: int,
    start: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> Trial:
    """Fine-tune `policy` for `steps` from the `start` weights on train1's first batches,
    re-estimate its BatchNorm statistics and score it on train2."""
    c, model = run.config.select, run.model
    model.load_state_dict(start[0])
    run.weighting.load_state_dict(start[1])
    run.policy = policy
    stream = run.stream("select", "train1")
    run.streams["select"] = stream
    if steps:
        optimizer = torch.optim.Adam(run.weights(), lr=run.config.post_train.lr)
        model.train()
        for _ in range(steps):
            run.weight_step(optimizer, "select", "fixed")
    run.recompute_batchnorm(policy, "select-batchnorm", "train1", c.batchnorm_batches)
    batch = run.config.dataset.batch_size
    batches = min(c.batches, run.config.evaluation.batches or c.batches)
    indices = run.splits["train2"][: batches * batch]
    metrics = evaluate(model, run.train_set, indices, batch, "fixed", None, policy)
    return Trial(picks, steps, metrics)
