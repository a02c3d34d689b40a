"""multi-fashion: two real Fashion-MNIST items per image (MultiMNIST-style), three tasks.

One item sits near the top-left corner and one near the bottom-right, each shifted by up to
four pixels, overlapping in the middle. Tasks: the left item's class, the right item's class,
and which of the four coarse groups (tops, bottoms, footwear, bags) the two items cover.
"""

from __future__ import annotations

import numpy as np

from onnxmtl.data.canvas import FashionCanvas
from onnxmtl.tasks import Task

CANVAS = 36
SHIFT = 4
# Coarse group of each Fashion-MNIST class: tops, bottoms, footwear, bags.
GROUP_OF_CLASS = np.array([0, 1, 0, 0, 0, 2, 0, 2, 3, 2])
GROUPS = ("tops", "bottoms", "footwear", "bags")


def compose(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` (36, 36) uint8 canvases and the (left, right) class of each, from a seeded
    draw of item pairs and shifts."""
    rng = np.random.default_rng(seed)
    left = rng.integers(0, len(images), count)
    right = rng.integers(0, len(images), count)
    shifts = rng.integers(0, SHIFT + 1, (count, 4))
    canvas = np.zeros((count, CANVAS, CANVAS), np.uint8)
    for i in range(count):
        r, c = shifts[i, 0], shifts[i, 1]
        canvas[i, r : r + 28, c : c + 28] = images[left[i]]
        r, c = CANVAS - 28 - shifts[i, 2], CANVAS - 28 - shifts[i, 3]
        window = canvas[i, r : r + 28, c : c + 28]
        np.maximum(window, images[right[i]], out=window)
    return canvas, labels[left], labels[right]


class MultiFashion(FashionCanvas):
    """multi-fashion built from one Fashion-MNIST split; deterministic for a seed."""

    name = "multi-fashion"
    canvas = CANVAS

    def compose(
        self, images: np.ndarray, labels: np.ndarray, count: int, seed: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        canvas, left, right = compose(images, labels, count, seed)
        groups = np.zeros((count, len(GROUPS)), np.float32)
        groups[np.arange(count), GROUP_OF_CLASS[left]] = 1
        groups[np.arange(count), GROUP_OF_CLASS[right]] = 1
        return canvas, {"left": left, "right": right, "groups": groups}

    def tasks(self) -> list[Task]:
        return [
            Task("left", "classification", 10),
            Task("right", "classification", 10),
            Task("groups", "multilabel", len(GROUPS)),
        ]
