"""delta-m: how much better a multi-task model does than a reference, in percent.

The definition is LibMTL's (Lin and Zhang, 2023): each task's metrics are compared with the
reference's, signed so that better is positive and averaged within the task first; then the
tasks are averaged. A task reported with four metrics so weighs as much as one reported with
one, where averaging every metric at once (Maninis et al., 2019) lets it outvote the others.
"""

from __future__ import annotations

import math

import numpy as np

from onnxmtl.tasks.metrics import HIGHER_IS_BETTER

Metrics = dict[str, dict[str, float]]  # task -> metric name -> value

DEFINITION = (
    "delta-m (LibMTL): per task, the mean over its metrics of the signed relative change "
    "against the reference (positive is better), then the mean over tasks, in percent"
)


def task_deltas(metrics: Metrics, reference: Metrics) -> dict[str, float]:
    """Each task's mean signed relative change (%) over the metrics both sides report with a
    finite, non-zero reference value; tasks with no such metric are left out."""
    deltas = {}
    for task, values in metrics.items():
        terms = []
        for name, value in values.items():
            base = reference.get(task, {}).get(name)
            if base is None or not base or math.isnan(base) or math.isnan(value):
                continue
            sign = 1 if HIGHER_IS_BETTER.get(name, True) else -1
            terms.append(sign * (value - base) / abs(base) * 100)
        if terms:
            deltas[task] = float(np.mean(terms))
    return deltas


def delta_m(metrics: Metrics, reference: Metrics) -> float:
    """Task-balanced delta-m (%) of `metrics` against `reference` (`DEFINITION`); NaN when
    no metric can be compared."""
    deltas = task_deltas(metrics, reference)
    return float(np.mean(list(deltas.values()))) if deltas else math.nan


def mean_metrics(runs: list[Metrics]) -> Metrics:
    """The metric-wise mean of several runs' metrics (the tasks and metrics of the first),
    so that one noisy reference model does not move every comparison with it."""
    if not runs:
        raise ValueError("mean_metrics needs at least one run's metrics")
    return {
        task: {name: float(np.mean([r[task][name] for r in runs])) for name in values}
        for task, values in runs[0].items()
    }
