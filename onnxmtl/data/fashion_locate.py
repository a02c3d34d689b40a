"""fashion-locate: one real Fashion-MNIST item anywhere on a larger canvas; what and where it is.

A pair of tasks that want different features from the same image, as the classification and
box-regression branches of a detector do: naming the item wants features that stay the same
when it moves, locating it wants features that move with it. Each 28x28 item lands at a
uniformly drawn place on a 48x48 canvas. Tasks: `item`, its class (10), and `where`, the centre
of the tight box around its pixels as (row, column) offsets from the canvas centre, in units of
the placement's standard deviation (about 6 px), so the target has zero mean and unit variance
whatever `size` the canvas is resized to, and neither task's loss dwarfs the other's.
"""

from __future__ import annotations

import numpy as np

from onnxmtl.data.canvas import FashionCanvas
from onnxmtl.tasks import Task

CANVAS = 48
ITEM = 28
# Standard deviation (pixels) of an item's place along each axis, a uniform draw of one of
# CANVAS - ITEM + 1 offsets: the unit of `where`.
SPREAD = float(np.sqrt(((CANVAS - ITEM + 1) ** 2 - 1) / 12))


def tight_boxes(images: np.ndarray) -> np.ndarray:
    """(N, 4) int (top, left, bottom, right) of the non-zero pixels of each (N, 28, 28) item,
    bottom and right exclusive; an empty item gets its whole tile (argmax finds no pixel at 0)."""
    boxes = np.empty((len(images), 4), np.int64)
    for axis, (low, high) in ((2, (0, 2)), (1, (1, 3))):
        # (N, 28): rows (axis 2) or columns (axis 1) in use
        filled = np.asarray(images.any(axis=axis))
        boxes[:, low] = filled.argmax(axis=1)
        boxes[:, high] = ITEM - filled[:, ::-1].argmax(axis=1)
    return boxes


def place(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int, side: int = CANVAS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` (side, side) uint8 canvases, the class of each item, and the (N, 4) pixel box
    (top, left, bottom, right; exclusive) its pixels fill, from a seeded draw of items and
    places."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), count)
    offset = rng.integers(0, side - ITEM + 1, (count, 2))
    rows = offset[:, 0, None, None] + np.arange(ITEM)[:, None]
    cols = offset[:, 1, None, None] + np.arange(ITEM)
    items = images[pick]
    canvas = np.zeros((count, side, side), np.uint8)
    canvas[np.arange(count)[:, None, None], rows, cols] = items
    return canvas, labels[pick], tight_boxes(items) + np.tile(offset, 2)


class FashionLocate(FashionCanvas):
    """fashion-locate built from one Fashion-MNIST split; deterministic for a seed. `boxes`
    holds each item's (top, left, bottom, right) pixel box on the canvas."""

    name = "fashion-locate"
    canvas = CANVAS

    def compose(
        self, images: np.ndarray, labels: np.ndarray, count: int, seed: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        canvas, item, self.boxes = place(images, labels, count, seed)
        centre = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        where = ((centre - CANVAS / 2) / SPREAD).astype(np.float32)
        return canvas, {"item": item, "where": where}

    def tasks(self) -> list[Task]:
        return [Task("item", "classification", 10), Task("where", "regression", 2)]
