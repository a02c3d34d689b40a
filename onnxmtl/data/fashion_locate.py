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

from pathlib import Path

import numpy as np
import torch

from onnxmtl.data.base import MultiTaskDataset, normalize_image
from onnxmtl.data.fashion_mnist import load_fashion_mnist
from onnxmtl.data.multi_fashion import resize
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
        filled = images.any(axis=axis)  # (N, 28): rows (axis 2) or columns (axis 1) in use
        boxes[:, low] = filled.argmax(axis=1)
        boxes[:, high] = ITEM - filled[:, ::-1].argmax(axis=1)
    return boxes


def place(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` (48, 48) uint8 canvases, the class of each item, and the (N, 4) pixel box
    (top, left, bottom, right; exclusive) its pixels fill, from a seeded draw of items and
    places."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), count)
    offset = rng.integers(0, CANVAS - ITEM + 1, (count, 2))
    rows = offset[:, 0, None, None] + np.arange(ITEM)[:, None]
    cols = offset[:, 1, None, None] + np.arange(ITEM)
    items = images[pick]
    canvas = np.zeros((count, CANVAS, CANVAS), np.uint8)
    canvas[np.arange(count)[:, None, None], rows, cols] = items
    return canvas, labels[pick], tight_boxes(items) + np.tile(offset, 2)


class FashionLocate(MultiTaskDataset):
    """fashion-locate built from one Fashion-MNIST split; deterministic for a seed."""

    name = "fashion-locate"

    def __init__(
        self,
        split: str = "train",
        count: int | None = None,
        size: int = CANVAS,
        seed: int = 0,
        root: str | Path | None = None,
    ) -> None:
        images, labels = load_fashion_mnist(split, root)
        count = len(images) if count is None else count
        canvas, self.item, boxes = place(images, labels, count, seed + (split == "test"))
        self.boxes = boxes
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        self.where = ((centre - CANVAS / 2) / SPREAD).astype(np.float32)
        self.images = resize(canvas, size) if size != CANVAS else canvas
        self.size = size

    def tasks(self) -> list[Task]:
        return [Task("item", "classification", 10), Task("where", "regression", 2)]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def __len__(self) -> int:
        return len(self.images)

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.images, {"item": self.item, "where": self.where}

    def __getitem__(self, index: int):
        image = normalize_image(self.images[index].astype(np.float32) / 255.0)
        return image, {
            "item": torch.tensor(int(self.item[index])),
            "where": torch.from_numpy(self.where[index]),
        }
