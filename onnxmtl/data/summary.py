"""What `onnxmtl data check` prints of a dataset split: counts, class histograms and value
ranges per task, so that a user sees what training will see."""

from __future__ import annotations

import numpy as np

from onnxmtl.data.base import MultiTaskDataset
from onnxmtl.tasks import Task


def summarize(split: str, dataset: MultiTaskDataset, tasks: list[Task]) -> list[str]:
    """Lines describing `dataset` (one split) for `tasks`: its size and, per task, how many
    samples carry a label and the distribution of the labels."""
    height, width = dataset.image_size
    lines = [f"{split}: {len(dataset)} samples, images {height}x{width}"]
    arrays = dataset.arrays()
    if arrays is None:
        return [*lines, "  (targets are read lazily; not summarised)"]
    targets = arrays[1]
    for task in tasks:
        values = targets.get(task.name)
        if values is None:
            lines.append(f"  {task.name}: no targets")
            continue
        lines.append(f"  {task.name} ({task.kind}): {_describe(task, np.asarray(values))}")
    return lines


def _describe(task: Task, values: np.ndarray) -> str:
    if task.kind == "classification":
        labelled = values[values != task.ignore_index].astype(np.int64)
        counts = np.bincount(labelled.clip(0), minlength=task.outputs)
        return f"{len(labelled)} of {len(values)} labelled; per class " + " ".join(
            f"{c}:{n}" for c, n in enumerate(counts)
        )
    rows = values.reshape(len(values), -1)
    if task.kind == "multilabel":
        given = _labelled(rows)
        positives = rows[given].sum(0).astype(int)
        return f"{int(given.sum())} of {len(values)} labelled; positives per label " + " ".join(
            f"{c}:{n}" for c, n in enumerate(positives)
        )
    if task.kind == "segmentation":
        masks = int((values != task.ignore_index).reshape(len(values), -1).any(1).sum())
        ids = values.astype(np.int64).ravel()
        ignored = ids == task.ignore_index
        counts = np.bincount(ids[~ignored].clip(0), minlength=task.outputs)
        shares = counts / max(1, ids.size)
        return (
            f"{masks} of {len(values)} masks; pixels per class "
            + " ".join(f"{c}:{s:.1%}" for c, s in enumerate(shares))
            + f"; ignored {ignored.mean():.1%}"
        )
    if task.kind == "depth":
        valid = np.isfinite(values) & (values > 0)
        if not valid.any():
            return f"{len(values)} maps; no valid pixel"
        return (
            f"{len(values)} maps; valid {valid.mean():.1%}, range "
            f"{values[valid].min():.4g} to {values[valid].max():.4g}"
        )
    if task.kind == "normals":
        valid = np.abs(values).sum(1) > 0
        return f"{len(values)} maps; valid {valid.mean():.1%}"
    given = _labelled(rows)
    if not given.any():
        return f"0 of {len(values)} labelled"
    flat = rows[given]
    return (
        f"{int(given.sum())} of {len(values)} labelled; min {flat.min():.4g}, mean "
        f"{flat.mean():.4g}, max {flat.max():.4g}"
    )


def _labelled(rows: np.ndarray) -> np.ndarray:
    """Which samples (rows of values) carry a label: those not all NaN."""
    return ~np.isnan(rows).all(axis=1)
