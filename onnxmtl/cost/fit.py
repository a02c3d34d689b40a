"""The latency table's coefficients: a least-squares fit of summed unit times to the measured
calibration models."""

from __future__ import annotations

import numpy as np


def fit_coefficients(
    sums: list[tuple[float, float]], measured: list[float]
) -> tuple[float, float, float]:
    """(base ms, scale, skip scale) of measured = base + scale * units + skip_scale * skips
    by least squares, `sums` holding each model's (units, skips) ms; with one scale for both
    where that fit is degenerate (no unit can be skipped) or gives a scale <= 0. The base
    may be negative: a unit timed on its own pays per-call costs that it does not pay inside
    a whole graph."""
    units, skips = np.array(sums).T
    y = np.array(measured)
    ones = np.ones_like(y)
    for columns in ((ones, units, skips), (ones, units + skips)):
        x = np.stack(columns, axis=1)
        if np.linalg.matrix_rank(x) < x.shape[1]:
            continue
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        if (coef[1:] > 0).all():
            return float(coef[0]), float(coef[1]), float(coef[-1])
    total = units + skips
    scale = float(total @ y / max(total @ total, 1e-12))
    return 0.0, scale, scale
