"""Datasets of real Fashion-MNIST items composed on a canvas, held in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onnxmtl.data.base import ArrayDataset
from onnxmtl.data.fashion_mnist import load_fashion_mnist


class FashionCanvas(ArrayDataset):
    """Canvases of `canvas` pixels composed from one Fashion-MNIST split by `compose`,
    deterministic for a seed (the test split draws with seed + 1), resized to `size`; one
    array of targets per task (integer arrays are class indices)."""

    canvas = 28

    def __init__(
        self,
        split: str = "train",
        count: int | None = None,
        size: int | None = None,
        seed: int = 0,
        root: str | Path | None = None,
    ) -> None:
        images, labels = load_fashion_mnist(split, root)
        count = len(images) if count is None else count
        self.size = self.canvas if size is None else size
        canvases, self.targets = self.compose(images, labels, count, seed + (split == "test"))
        self.images = resize(canvases, self.size) if self.size != self.canvas else canvases

    def compose(
        self, images: np.ndarray, labels: np.ndarray, count: int, seed: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """`count` (canvas, canvas) uint8 images and their targets by task name."""
        raise NotImplementedError

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)


def resize(canvas: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """(N, H, W) uint8 images resized (bilinear) to (N, size, size), `chunk` at a time so that
    the float copy stays small."""
    out = np.empty((len(canvas), size, size), np.uint8)
    for start in range(0, len(canvas), chunk):
        x = torch.from_numpy(canvas[start : start + chunk]).float().unsqueeze(1)
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out[start : start + chunk] = y.squeeze(1).round().clamp(0, 255).byte().numpy()
    return out
