"""fashion-edges: one real Fashion-MNIST item anywhere on a canvas; what it is, and its edges.

A pair of tasks at opposite ends of the feature hierarchy sharing one backbone, for studying
negative transfer: naming the item wants deep features that stay the same when it moves,
tracing its edges wants early, full-resolution ones that move with every pixel. Each 28x28
item lands at a uniformly drawn place on a 40x40 canvas. Tasks: `item`, its class (10), and
`edges`, a per-pixel mask (segmentation, 2 classes: 1 = edge) of the canvas pixels whose Sobel
gradient magnitude exceeds THRESHOLD, read by a `deeplab` head (an early map beside the last:
a small backbone input leaves the last map a few pixels wide). The mask stays at the 40x40
canvas resolution whatever `size` the image is resized to (training and evaluation resize a
dense prediction to its target's resolution), so it is exact rather than a resampled
1-pixel-thin line.
"""

from __future__ import annotations

import numpy as np

from onnxmtl.data.canvas import FashionCanvas
from onnxmtl.data.fashion_locate import place
from onnxmtl.tasks import Task

CANVAS = 40
# Sobel magnitude (on 0-255 pixels) above which a pixel is an edge: a full black-to-white
# step gives 4 * 255 = 1020. Measured on the whole train and test splits (seed 0): 16.3% of
# the pixels in an item's tight box are edges (per class from 12% for shirts to 34% for
# trousers), 22% of its non-zero pixels, 5.4% of the canvas; 0.2% of items have none; 4% of
# the edge pixels lie in the 1-pixel ring just outside the box.
THRESHOLD = 640


def sobel_squared(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float32 squared Sobel gradient magnitude of (N, H, W) images, zero beyond
    their border: the kernels are separable, a 1-2-1 smoothing along one axis and a central
    difference along the other."""
    x = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    along_columns = x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]  # (N, H, W + 2)
    along_rows = x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]  # (N, H + 2, W)
    across = along_columns[:, :, 2:] - along_columns[:, :, :-2]
    down = along_rows[:, 2:] - along_rows[:, :-2]
    return across**2 + down**2


def edges(canvas: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, H, W) uint8 mask, 1 where the Sobel gradient magnitude of the (N, H, W) uint8
    `canvas` exceeds THRESHOLD; `chunk` images at a time. The sums of 0-255 integers and
    their squares are exact in float32, so the comparison is too."""
    out = np.empty(canvas.shape, np.uint8)
    for start in range(0, len(canvas), chunk):
        out[start : start + chunk] = sobel_squared(canvas[start : start + chunk]) > THRESHOLD**2
    return out


class FashionEdges(FashionCanvas):
    """fashion-edges built from one Fashion-MNIST split; deterministic for a seed. `boxes`
    holds each item's (top, left, bottom, right) pixel box on the canvas."""

    name = "fashion-edges"
    canvas = CANVAS

    def compose(
        self, images: np.ndarray, labels: np.ndarray, count: int, seed: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        canvas, item, self.boxes = place(images, labels, count, seed, CANVAS)
        return canvas, {"item": item, "edges": edges(canvas)}

    def tasks(self) -> list[Task]:
        return [
            Task("item", "classification", 10),
            Task("edges", "segmentation", 2, head="deeplab"),
        ]
