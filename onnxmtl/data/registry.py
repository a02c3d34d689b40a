"""Datasets by name (`multi-fashion`, `fashion-locate`, `fashion-edges`, `scenes`) or by folder
(a labelled folder of images, or the NYUv2 / CityScapes layout)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxmtl.data.base import MultiTaskDataset
from onnxmtl.data.fashion_edges import FashionEdges
from onnxmtl.data.fashion_locate import FashionLocate
from onnxmtl.data.folders import FolderDataset
from onnxmtl.data.labelled_folder import LabelledFolder, is_labelled_folder
from onnxmtl.data.multi_fashion import MultiFashion
from onnxmtl.data.scenes import Scenes
from onnxmtl.errors import DataError
from onnxmtl.registry import add

DatasetFactory = Callable[..., MultiTaskDataset]  # (split='train' | 'test', **options)
DATASETS: dict[str, DatasetFactory] = {
    "multi-fashion": MultiFashion,
    "fashion-locate": FashionLocate,
    "fashion-edges": FashionEdges,
    "scenes": Scenes,
}


def register_dataset(name: str, factory: DatasetFactory, override: bool = False) -> None:
    """Make `name` a dataset for `--data` and `load_dataset`: `factory(split=SPLIT,
    **options)` builds its 'train' or 'test' split (a name registered already is refused
    unless `override`)."""
    add(DATASETS, name, factory, "dataset", override)


def load_dataset(source: str | Path, split: str = "train", **options: Any) -> MultiTaskDataset:
    """The `split` ('train' or 'test') of a named dataset or of a dataset folder.

    Options go to the dataset (count, size, seed, root or cache_dir for named ones; classes
    for folders)."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")
    name = str(source)
    if name in DATASETS:
        try:
            return DATASETS[name](split=split, **options)
        except TypeError as exc:
            raise DataError(f"dataset '{name}': bad option ({exc}).") from exc
    path = Path(source)
    if path.is_dir() and is_labelled_folder(path):
        try:
            return LabelledFolder(path, split, **options)
        except TypeError as exc:
            raise DataError(
                f"{path}: bad dataset option ({exc}); a labelled folder takes size, count and "
                "test_fraction."
            ) from exc
    if path.is_dir():
        try:
            return FolderDataset(path, split, **options)
        except TypeError as exc:
            raise DataError(
                f"{path}: bad dataset option for a folder ({exc}); a folder takes only 'classes'."
            ) from exc
    raise DataError(
        f"{source}: not a dataset name ({', '.join(DATASETS)}) nor a folder; give one of the "
        "names, a labelled folder (tasks.yaml, images/, labels.csv) or a folder in the "
        "NYUv2/CityScapes .npy layout."
    )
