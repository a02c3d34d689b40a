"""Checks of a dataset's arrays against the tasks before training: every image and target a
task would train or be scored on is one it can use, and each problem names the sample.

Without them a label outside the classes silently becomes 'ignore', NaN depth or all-zero
normals give a loss of 0, uint8 images pass as [0, 1] floats and NaN images run the whole
budget; here each is one DataError before the first step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from onnxmtl.errors import DataError
from onnxmtl.tasks import Task

CLASS_KINDS = ("segmentation", "classification")
IMAGE_SLACK = 1e-3  # float images may exceed [0, 1] by rounding


def _first_bad(ok: np.ndarray) -> int | None:
    """The first sample (axis 0) where `ok` is not true everywhere, or None."""
    bad = ~ok.reshape(len(ok), -1).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_images(images: np.ndarray, where: Callable[[int], str]) -> None:
    """Images must be uint8 (0-255, divided by 255 when read) or floats in [0, 1] with no
    NaN or infinity."""
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(
            f"{where(0)}: images of type {images.dtype}; expected uint8 (0-255) or floats in "
            "[0, 1]."
        )
    index = _first_bad(np.isfinite(images))
    if index is not None:
        raise DataError(f"{where(index)}: the image holds NaN or infinite values.")
    index = _first_bad((images >= -IMAGE_SLACK) & (images <= 1 + IMAGE_SLACK))
    if index is not None:
        low, high = float(images[index].min()), float(images[index].max())
        raise DataError(
            f"{where(index)}: image values in [{low:g}, {high:g}]; float images must be in "
            "[0, 1] (save 0-255 images as uint8, or divide them by 255)."
        )


def check_target(
    task: Task,
    values: np.ndarray,
    where: Callable[[int], str],
    unlabelled: Sequence[int] = (),
) -> None:
    """The targets of `task` for a batch of samples (axis 0): class ids in [0, num_outputs)
    or the task's ignore value (an unlabelled pixel or sample; segmentation also takes the
    values in `unlabelled`), finite depth >= 0 (0: not measured), finite normals, and finite
    multilabel and regression rows, or rows of NaN alone (an unlabelled sample)."""
    name = f"task '{task.name}' ({task.kind})"
    if task.kind in CLASS_KINDS:
        if not np.issubdtype(values.dtype, np.integer):
            index = _first_bad(np.isfinite(values) & (values == np.round(values)))
            if index is not None:
                raise DataError(f"{where(index)}: {name} labels must be integer class ids.")
        ok = (values >= 0) & (values < task.num_outputs)
        allowed = [*unlabelled, task.ignore_index] if task.kind == "segmentation" else []
        if task.kind == "classification":
            allowed = [task.ignore_index]
        for value in allowed:
            ok |= values == value
        index = _first_bad(ok)
        if index is not None:
            wrong = [int(v) for v in np.unique(values[index][~ok[index]])[:5]]
            ignore = f" and not unlabelled ({', '.join(map(str, allowed))})" if allowed else ""
            raise DataError(
                f"{where(index)}: {name} label(s) {wrong} outside [0, {task.num_outputs})"
                f"{ignore}; fix the labels, or num_outputs / ignore_index in the tasks file."
            )
        return
    finite = np.isfinite(values)
    if task.kind in ("multilabel", "regression"):  # a row of NaN alone: unlabelled
        finite |= (
            np.isnan(values)
            .reshape(len(values), -1)
            .all(axis=1)
            .reshape((len(values),) + (1,) * (values.ndim - 1))
        )
    index = _first_bad(finite)
    if index is not None:
        hint = {
            "depth": " (mark missing depth with 0)",
            "normals": " (mark missing with 0)",
            "multilabel": " (an unlabelled sample is NaN in every value)",
            "regression": " (an unlabelled sample is NaN in every value)",
        }
        raise DataError(
            f"{where(index)}: {name} target holds NaN or infinite values"
            f"{hint.get(task.kind, '')}; fix the data."
        )
    if task.kind == "depth":
        index = _first_bad(values >= 0)
        if index is not None:
            raise DataError(f"{where(index)}: {name} holds negative depths; 0 marks missing.")


def check_coverage(task: Task, valid: bool, source: str) -> None:
    """Every task needs a label in at least one sample of the split (a measured pixel for a
    dense regression), else its loss is 0 throughout and its metrics undefined."""
    if valid:
        return
    what = {
        "depth": "positive depth",
        "normals": "non-zero normal",
        "segmentation": "labelled pixel (every pixel is ignored)",
    }.get(task.kind, "label")
    raise DataError(
        f"{source}: task '{task.name}' ({task.kind}) has no {what} in any sample of the "
        "split: nothing to train on or score; label some samples, or leave the task out."
    )


def has_valid(task: Task, values: np.ndarray) -> bool:
    """Whether `values` hold a label `check_coverage` counts: a class id that is not the
    ignore value, a row of numbers that is not all NaN, a positive depth, a non-zero normal."""
    if task.kind == "depth":
        return bool((values > 0).any())
    if task.kind == "normals":
        return bool((values != 0).any())
    if task.kind in CLASS_KINDS:
        return bool(((values != task.ignore_index) & (values >= 0)).any())
    return bool((~np.isnan(values)).any())


def check_arrays(
    source: str,
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    tasks: list[Task],
) -> None:
    """Check a whole split held as arrays (axis 0: samples) for `tasks`; errors name
    `source` and the sample index."""

    def where(index: int) -> str:
        return f"{source}: sample {index}"

    check_images(images, where)
    for task in tasks:
        if task.name in targets:
            check_target(task, targets[task.name], where)
            check_coverage(task, has_valid(task, targets[task.name]), source)
