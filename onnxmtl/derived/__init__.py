"""Derive: the compact multi-task model a policy implies, saved and loaded as one file."""

from onnxmtl.derived.io import load_derived, save_derived
from onnxmtl.derived.model import DerivedModel, derive, perturb_weights

__all__ = ["DerivedModel", "derive", "load_derived", "perturb_weights", "save_derived"]
