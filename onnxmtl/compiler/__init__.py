"""Compile: an IR `Graph` and tasks into a searchable multi-task `SuperModel`."""

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
    "branch_costs",
    "compile",
    "describe_totals",
    "format_summary",
    "load_supermodel",
    "policy_params",
    "renormalized_units",
    "save_supermodel",
    "summarize",
]
