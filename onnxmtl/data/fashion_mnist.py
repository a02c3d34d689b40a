"""Fashion-MNIST from a local folder of the standard IDX files (Debian: dataset-fashion-mnist)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from onnxmtl.data.idx import read_idx
from onnxmtl.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_PREFIX = {"train": "train", "test": "t10k"}


def find_fashion_mnist(root: str | Path | None = None) -> Path:
    """The folder holding the IDX files: `root`, $ONNXMTL_FASHION_MNIST, or Debian's."""
    candidates = [Path(root)] if root else []
    if not root and os.environ.get("ONNXMTL_FASHION_MNIST"):
        candidates.append(Path(os.environ["ONNXMTL_FASHION_MNIST"]))
    if not root:
        candidates.append(DEBIAN_DIR)
    for folder in candidates:
        if _file(folder, "train", "images"):
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"Fashion-MNIST IDX files not found in {where}; install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or pass the folder holding "
        "train-images-idx3-ubyte[.gz]."
    )


def _file(folder: Path, split: str, kind: str) -> Path | None:
    stem = f"{_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(
    split: str = "train", root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the 'train' or 'test' split."""
    if split not in _PREFIX:
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}.")
    folder = find_fashion_mnist(root)
    images_path, labels_path = _file(folder, split, "images"), _file(folder, split, "labels")
    if images_path is None or labels_path is None:
        raise DataError(f"{folder}: the {split} images or labels IDX file is missing.")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match."
        )
    return images, labels.astype(np.int64)
