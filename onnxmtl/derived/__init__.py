"""Derive: the compact multi-task model a policy implies, saved and loaded as one file."""

from onnxmtl.derived.build import derive
from onnxmtl.derived.io import load_derived, save_derived
from onnxmtl.derived.model import DerivedModel, UnitBranch
from onnxmtl.derived.perturb import perturb_weights
from onnxmtl.derived.runs import one_module_per_run

__all__ = [
    "DerivedModel",
    "UnitBranch",
    "derive",
    "load_derived",
    "one_module_per_run",
    "perturb_weights",
    "save_derived",
]
