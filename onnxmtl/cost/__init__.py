"""Costs the search can penalise: parameters, MACs and onnxruntime latency measured here (a
latency table: timing, cache, fit), each a `CostModel` the trainer is given, by name."""

from onnxmtl.compiler.policy_cost import CostModel
from onnxmtl.cost.ancestors import ancestor_matrix, model_ancestors
from onnxmtl.cost.budget import fit_to_budget
from onnxmtl.cost.cache import latency_table
from onnxmtl.cost.counted import CountedCost, mac_cost, param_cost
from onnxmtl.cost.describe import describe_table, format_table
from onnxmtl.cost.latency import LatencyCost, latency_cost
from onnxmtl.cost.measure import measure_latency_table
from onnxmtl.cost.registry import COSTS, cost_factory, make_cost, register_cost
from onnxmtl.cost.table import LatencyTable

__all__ = [
    "COSTS",
    "CostModel",
    "CountedCost",
    "LatencyCost",
    "LatencyTable",
    "ancestor_matrix",
    "cost_factory",
    "describe_table",
    "fit_to_budget",
    "format_table",
    "latency_cost",
    "latency_table",
    "mac_cost",
    "make_cost",
    "measure_latency_table",
    "model_ancestors",
    "param_cost",
    "register_cost",
]
