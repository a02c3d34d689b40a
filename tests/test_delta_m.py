"""delta-m as LibMTL defines it: metrics averaged within each task first, then the tasks."""

from __future__ import annotations

import math

import pytest

from onnxmtl.tasks import delta_m, mean_metrics, task_deltas


def test_each_metric_is_signed_so_that_better_is_positive():
    base = {"seg": {"miou": 0.5}, "depth": {"abs_err": 0.4}}
    better = {"seg": {"miou": 0.55}, "depth": {"abs_err": 0.3}}
    assert delta_m(better, base) == pytest.approx((10 + 25) / 2)
    assert delta_m(base, base) == 0


def test_a_task_with_many_metrics_weighs_as_much_as_one_with_one():
    # by hand: where = (+10 - 20 + 50 + 0) / 4 = +10; item = -30; mean of the two tasks -10.
    # Averaging all five metrics at once would give (+10 - 20 + 50 + 0 - 30) / 5 = +2.
    reference = {
        "where": {"mae": 0.2, "rmse": 0.5, "delta1": 0.4, "delta2": 0.8},
        "item": {"accuracy": 0.9},
    }
    model = {
        "where": {"mae": 0.18, "rmse": 0.6, "delta1": 0.6, "delta2": 0.8},
        "item": {"accuracy": 0.63},
    }
    assert task_deltas(model, reference) == pytest.approx({"where": 10.0, "item": -30.0})
    assert delta_m(model, reference) == pytest.approx(-10.0)


def test_metrics_that_cannot_be_compared_are_left_out():
    reference = {"a": {"accuracy": 0.0, "top5": 0.5}, "b": {"mae": float("nan")}}
    model = {"a": {"accuracy": 0.3, "top5": 0.55}, "b": {"mae": 0.1}}
    assert task_deltas(model, reference) == pytest.approx({"a": 10.0})
    assert math.isnan(delta_m({"b": {"mae": 0.1}}, reference))


def test_mean_metrics_averages_each_metric_over_runs():
    runs = [{"a": {"accuracy": 0.5, "mae": 1.0}}, {"a": {"accuracy": 0.7, "mae": 3.0}}]
    assert mean_metrics(runs) == {"a": {"accuracy": pytest.approx(0.6), "mae": 2.0}}
    with pytest.raises(ValueError):
        mean_metrics([])
