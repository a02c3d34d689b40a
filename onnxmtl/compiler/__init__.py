"""Compile: an IR `Graph` and tasks into a searchable multi-task `SuperModel`."""

from onnxmtl.compiler.baseline_policies import (
    LAST_K_POLICIES,
    POLICY_BASELINES,
    baseline_policy,
    is_policy_baseline,
    last_k_policy,
    matched_random_policy,
    random_policy,
    unshared_pairs,
)
from onnxmtl.compiler.branches import Projection, Renorm, UnitBranches
from onnxmtl.compiler.build import compile, renormalized_units
from onnxmtl.compiler.io import load_supermodel, save_supermodel
from onnxmtl.compiler.policy import BRANCHES, SHARED, SKIP, SPECIFIC, Policy
from onnxmtl.compiler.summary import (
    branch_costs,
    describe_totals,
    format_summary,
    policy_params,
    summarize,
)
from onnxmtl.compiler.supermodel import MODES, SuperModel

__all__ = [
    "LAST_K_POLICIES",
    "POLICY_BASELINES",
    "BRANCHES",
    "MODES",
    "SHARED",
    "SKIP",
    "SPECIFIC",
    "Policy",
    "Projection",
    "Renorm",
    "SuperModel",
    "UnitBranches",
    "baseline_policy",
    "branch_costs",
    "compile",
    "describe_totals",
    "format_summary",
    "is_policy_baseline",
    "last_k_policy",
    "load_supermodel",
    "matched_random_policy",
    "policy_params",
    "random_policy",
    "renormalized_units",
    "save_supermodel",
    "summarize",
    "unshared_pairs",
]
