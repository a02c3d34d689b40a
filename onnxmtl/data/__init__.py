"""Datasets, read from local files or generated (nothing is downloaded)."""

from onnxmtl.data.base import SPLITS, MultiTaskDataset, split_indices
from onnxmtl.data.fashion_edges import FashionEdges
from onnxmtl.data.fashion_locate import FashionLocate
from onnxmtl.data.fashion_mnist import CLASSES, find_fashion_mnist, load_fashion_mnist
from onnxmtl.data.fingerprint import data_fingerprint
from onnxmtl.data.folders import FolderDataset
from onnxmtl.data.idx import read_idx
from onnxmtl.data.multi_fashion import MultiFashion
from onnxmtl.data.registry import DATASETS, load_dataset, register_dataset
from onnxmtl.data.scenes import Scenes

__all__ = [
    "CLASSES",
    "DATASETS",
    "SPLITS",
    "data_fingerprint",
    "FashionEdges",
    "FashionLocate",
    "FolderDataset",
    "MultiFashion",
    "MultiTaskDataset",
    "Scenes",
    "find_fashion_mnist",
    "load_dataset",
    "load_fashion_mnist",
    "read_idx",
    "register_dataset",
    "split_indices",
]
