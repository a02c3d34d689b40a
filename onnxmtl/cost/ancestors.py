"""Which units feed which: what turns per-unit costs into runs of the derived model."""

from __future__ import annotations

import torch

from onnxmtl.compiler import SuperModel
from onnxmtl.compiler.backbone import unit_ancestors


def ancestor_matrix(ancestors: list[list[int]] | list[set[int]]) -> torch.Tensor:
    """(units, units) float matrix, 1 where the column's unit feeds the row's."""
    matrix = torch.zeros(len(ancestors), len(ancestors), dtype=torch.float64)
    for u, feeding in enumerate(ancestors):
        matrix[u, list(feeding)] = 1
    return matrix


def model_ancestors(model: SuperModel) -> list[list[int]]:
    """For each of `model`'s units, the units whose outputs its input depends on."""
    return [sorted(a) for a in unit_ancestors(model.backbone, len(model.units))]
