"""Which model `run` tells the user to deploy: the best validation delta-m within the budget."""

from __future__ import annotations

from onnxmtl.pipeline.choose import choose_model
from onnxmtl.training import SearchConfig


def _methods() -> dict:
    return {
        "searched": {"val_delta_m": -1.0, "param_share": 0.45, "macs": 300},
        "all-shared": {"val_delta_m": -4.0, "param_share": 0.35, "macs": 100},
        "single-task": {"val_delta_m": 0.0, "param_share": 1.0, "macs": 300},
    }


LATENCY = {"searched": 2.0, "all-shared": 1.0, "single-task": 3.0}


def test_without_a_budget_the_best_validation_delta_m_wins():
    choice = choose_model(_methods(), LATENCY, SearchConfig(), "single-task")
    assert choice.model == "single-task" and choice.budget == "none"
    assert "searched -1.00%" in choice.reason and "all-shared -4.00%" in choice.reason


def test_a_parameter_budget_rules_out_the_single_task_models():
    config = SearchConfig().with_options(cost="params", cost_budget=0.6)
    choice = choose_model(_methods(), LATENCY, config, "single-task")
    assert choice.model == "searched"
    fits = {c.name: c.within_budget for c in choice.candidates}
    assert fits == {"searched": True, "all-shared": True, "single-task": False}
    assert "within params <= 0.6" in choice.reason


def test_a_latency_budget_uses_the_measured_latency():
    config = SearchConfig().with_options(latency_budget_ms=1.5)
    choice = choose_model(_methods(), LATENCY, config, "single-task")
    assert choice.model == "all-shared"
    assert [c.name for c in choice.candidates if c.within_budget] == ["all-shared"]


def test_a_mac_budget_is_a_share_of_the_single_task_macs():
    config = SearchConfig().with_options(cost="macs", cost_budget=0.5)
    assert choose_model(_methods(), LATENCY, config, "single-task").model == "all-shared"


def test_when_nothing_fits_the_cheapest_is_named_and_the_reason_says_so():
    config = SearchConfig().with_options(latency_budget_ms=0.5)
    choice = choose_model(_methods(), LATENCY, config, "single-task")
    assert choice.model == "all-shared"
    assert choice.reason.startswith("no model fits 0.5 ms at batch 1")


def test_ties_go_to_the_smaller_model():
    methods = _methods()
    methods["searched"]["val_delta_m"] = 0.0
    assert choose_model(methods, LATENCY, SearchConfig(), "single-task").model == "searched"
