"""Datasets, read from local files only (nothing is downloaded)."""

from onnxmtl.data.fashion_mnist import CLASSES, find_fashion_mnist, load_fashion_mnist
from onnxmtl.data.idx import read_idx

__all__ = ["CLASSES", "find_fashion_mnist", "load_fashion_mnist", "read_idx"]
