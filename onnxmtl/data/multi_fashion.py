"""multi-fashion: two real Fashion-MNIST items per image (MultiMNIST-style), three tasks.

One item sits near the top-left corner and one near the bottom-right, each shifted by up to
four pixels, overlapping in the middle. Tasks: the left item's class, the right item's class,
and which of the four coarse groups (tops, bottoms, footwear, bags) the two items cover.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onnxmtl.data.base import MultiTaskDataset, normalize_image
from onnxmtl.data.fashion_mnist import load_fashion_mnist
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


class MultiFashion(MultiTaskDataset):
    """multi-fashion built from one Fashion-MNIST split; deterministic for a seed."""

    name = "multi-fashion"

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
        canvas, self.left, self.right = compose(images, labels, count, seed + (split == "test"))
        if size != CANVAS:
            canvas = resize(canvas, size)
        self.images = canvas
        groups = np.zeros((count, len(GROUPS)), np.float32)
        groups[np.arange(count), GROUP_OF_CLASS[self.left]] = 1
        groups[np.arange(count), GROUP_OF_CLASS[self.right]] = 1
        self.groups = groups
        self.size = size

    def tasks(self) -> list[Task]:
        return [
            Task("left", "classification", 10),
            Task("right", "classification", 10),
            Task("groups", "multilabel", len(GROUPS)),
        ]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def __len__(self) -> int:
        return len(self.images)

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.images, {"left": self.left, "right": self.right, "groups": self.groups}

    def __getitem__(self, index: int):
        image = normalize_image(self.images[index].astype(np.float32) / 255.0)
        return image, {
            "left": torch.tensor(int(self.left[index])),
            "right": torch.tensor(int(self.right[index])),
            "groups": torch.from_numpy(self.groups[index]),
        }


def resize(canvas: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """(N, H, W) uint8 images resized (bilinear) to (N, size, size), `chunk` at a time so that
    the float copy stays small."""
    out = np.empty((len(canvas), size, size), np.uint8)
    for start in range(0, len(canvas), chunk):
        x = torch.from_numpy(canvas[start : start + chunk]).float().unsqueeze(1)
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out[start : start + chunk] = y.squeeze(1).round().clamp(0, 255).byte().numpy()
    return out
