"""fashion-edges: placement, the Sobel edge mask against an independent computation, splits,
resizing and loading by name; on random items, and on real Fashion-MNIST where installed."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onnxmtl.data import DATASETS, FashionEdges, load_dataset
from onnxmtl.data.fashion_edges import CANVAS, THRESHOLD, edges
from onnxmtl.data.fashion_locate import ITEM
from onnxmtl.data.fashion_mnist import DEBIAN_DIR, load_fashion_mnist

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_mask(canvas: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: Sobel magnitude > THRESHOLD, by torch's conv2d (zero padding)."""
    x = torch.from_numpy(canvas).double().unsqueeze(1)
    kernels = torch.stack([SOBEL_X, SOBEL_X.T]).double().unsqueeze(1)  # (2, 1, 3, 3)
    grad = F.conv2d(x, kernels, padding=1)
    return (grad.pow(2).sum(dim=1).sqrt() > THRESHOLD).numpy()


def near(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels within one pixel (8-neighbourhood) of a non-zero pixel."""
    x = torch.from_numpy(image > 0).float()[None, None]
    return (F.max_pool2d(x, 3, stride=1, padding=1)[0, 0] > 0).numpy()


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fashion_dir(tmp_path):
    """Fashion-MNIST IDX files of blob items: a bright random rectangle with random texture
    (so edges and interior both occur), labels that differ per item."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        images = np.zeros((n, ITEM, ITEM), np.uint8)
        for image in images:
            top, left = rng.integers(0, 10, 2)
            bottom, right = rng.integers(18, ITEM + 1, 2)
            image[top:bottom, left:right] = rng.integers(60, 256, (bottom - top, right - left))
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) * 7) % 10)
    return tmp_path


def test_deterministic_per_seed_and_split(fashion_dir):
    a = FashionEdges("train", count=25, seed=3, root=fashion_dir)
    b = FashionEdges("train", count=25, seed=3, root=fashion_dir)
    c = FashionEdges("train", count=25, seed=4, root=fashion_dir)
    test = FashionEdges("test", count=25, seed=3, root=fashion_dir)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)
    assert all(np.array_equal(a.targets[k], b.targets[k]) for k in ("item", "edges"))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.targets["edges"], c.targets["edges"])
    assert not np.array_equal(a.images, test.images)
    assert not np.array_equal(a.targets["edges"], test.targets["edges"])


def test_each_canvas_holds_one_whole_item_and_its_class(fashion_dir):
    images, labels = load_fashion_mnist("train", fashion_dir)
    data = FashionEdges("train", count=40, seed=1, root=fashion_dir)
    offsets = set()
    for canvas, item, box in zip(data.images, data.targets["item"], data.boxes):
        # every 28x28 window against every item: (rows, cols, items)
        windows = np.lib.stride_tricks.sliding_window_view(canvas, (ITEM, ITEM))
        hits = (windows[:, :, None] == images).all(axis=(-2, -1))
        hits &= (windows.sum(axis=(-2, -1), dtype=np.int64) == canvas.sum(dtype=np.int64))[
            ..., None
        ]  # the item is all there is on the canvas
        rows, cols, found = np.nonzero(hits)
        assert len(set(found)) == 1  # one (textured, so unique) item
        assert item == labels[found[0]]  # and its Fashion-MNIST label is the class target
        nonzero = np.nonzero(canvas)
        assert box.tolist() == [
            nonzero[0].min(),
            nonzero[1].min(),
            nonzero[0].max() + 1,
            nonzero[1].max() + 1,
        ]
        offsets.add((rows[0], cols[0]))
    assert len(offsets) > 20  # places are drawn across the canvas
    assert data.targets["item"].dtype == np.int64


def test_edge_mask_is_the_thresholded_sobel_magnitude(fashion_dir):
    data = FashionEdges("train", count=20, seed=2, root=fashion_dir)
    mask = data.targets["edges"]
    assert mask.shape == (20, CANVAS, CANVAS) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert np.array_equal(mask.astype(bool), sobel_mask(data.images))
    # chunking changes nothing, and a hand-made step edge lands where expected
    assert np.array_equal(edges(data.images, chunk=3), mask)
    step = np.zeros((1, 8, 8), np.uint8)
    step[0, :, 4:] = 255  # response 4 * 255 on columns 3 and 4, and at the border (zero beyond)
    assert np.flatnonzero(edges(step)[0, 2:-2].any(axis=0)).tolist() == [3, 4, 7]
    for value, edge in ((155, False), (170, True)):  # a step of 155 gives 620, 170 gives 680
        dim = np.where(step > 0, value, 0).astype(np.uint8)
        assert edges(dim)[0, 2:-2, :-2].any() == edge  # away from the border


def test_edges_lie_only_around_the_item(fashion_dir):
    data = FashionEdges("test", count=30, seed=0, root=fashion_dir)
    for canvas, mask, (top, left, bottom, right) in zip(
        data.images, data.targets["edges"], data.boxes
    ):
        assert mask.any()
        assert not (mask & ~near(canvas)).any()  # no edge on blank canvas
        ring = np.zeros_like(mask, bool)
        ring[max(top - 1, 0) : bottom + 1, max(left - 1, 0) : right + 1] = True
        assert not (mask & ~ring).any()  # nor beyond one pixel around the item's box


def test_by_name_and_resized(fashion_dir):
    assert DATASETS["fashion-edges"] is FashionEdges
    data = load_dataset("fashion-edges", "train", count=6, size=64, seed=5, root=fashion_dir)
    native = load_dataset("fashion-edges", "train", count=6, seed=5, root=fashion_dir)
    assert isinstance(data, FashionEdges) and data.name == "fashion-edges" and len(data) == 6
    assert [(t.name, t.kind, t.num_outputs) for t in data.tasks()] == [
        ("item", "classification", 10),
        ("edges", "segmentation", 2),
    ]
    image, targets = data[0]
    # the image is resized; the mask stays at canvas resolution, the same as unresized
    assert image.shape == (3, 64, 64) and data.image_size == (64, 64)
    assert targets["edges"].shape == (CANVAS, CANVAS)
    assert np.array_equal(data.targets["edges"], native.targets["edges"])
    assert native[0][0].shape == (3, CANVAS, CANVAS)
    data.check(data.tasks())  # the targets are ones training can use


@pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_items_edge_share():
    data = load_dataset("fashion-edges", "test", count=300)
    mask, images = data.targets["edges"], data.images
    assert np.array_equal(mask.astype(bool), sobel_mask(images))
    assert set(data.targets["item"].tolist()) == set(range(10))
    inside = sum(int(m[t:b, lf:r].sum()) for m, (t, lf, b, r) in zip(mask, data.boxes))
    area = int(np.prod(data.boxes[:, 2:] - data.boxes[:, :2], axis=1).sum())
    assert 0.10 <= inside / area <= 0.25  # the share THRESHOLD's comment states (16%)
    assert all(not (m & ~near(im)).any() for m, im in zip(mask, images))
