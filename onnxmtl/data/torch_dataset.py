"""A user's own `torch.utils.data.Dataset` as a multi-task dataset.

From Python, `data` may be a pair `(train, test)` of datasets whose items are
`(image, {task name: target})`: image a (3, H, W) float tensor (or array), targets as the
tasks' losses take them (a class index, a (C,) multi-label vector, an (H, W) mask...). The
dataset does not say what its tasks are, so the tasks are given with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch
from torch.utils.data import Dataset

from onnxmtl.data.base import MultiTaskDataset
from onnxmtl.errors import DataError
from onnxmtl.tasks import Task

DataSource = str | Path | Sequence[Dataset]


class TorchDataset(MultiTaskDataset):
    """`dataset` (items `(image, {task: target})`) labelled for `tasks`; its first item is
    checked at once, so a dataset of another shape fails before any training."""

    def __init__(self, dataset: Dataset, tasks: Sequence[Task], split: str) -> None:
        self.dataset, self._tasks, self.split = dataset, list(tasks), split
        self.preprocessing = {"description": f"as {type(dataset).__name__} returns its images"}
        self.name = f"{type(dataset).__name__} ({split})"
        try:
            self.count = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise DataError(
                f"{self.name}: the dataset has no len(); give a map-style Dataset."
            ) from exc
        if self.count == 0:
            raise DataError(f"{self.name}: the dataset is empty.")
        image, _ = self[0]
        self.size = (int(image.shape[-2]), int(image.shape[-1]))

    def tasks(self) -> list[Task]:
        return list(self._tasks)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        item = self.dataset[index]
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], dict)):
            raise DataError(
                f"{self.name}: item {index} is a {type(item).__name__}; items must be "
                "(image, {task name: target})."
            )
        image, targets = item
        image = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image)
        if image.dim() != 3 or not image.is_floating_point():
            raise DataError(
                f"{self.name}: item {index} has an image of shape {tuple(image.shape)} and type "
                f"{image.dtype}; give a (3, H, W) float tensor."
            )
        missing = [t.name for t in self._tasks if t.name not in targets]
        if missing:
            raise DataError(
                f"{self.name}: item {index} has no target for task(s) {', '.join(missing)} (it "
                f"has {', '.join(map(str, targets)) or 'none'})."
            )
        return image, {t.name: torch.as_tensor(targets[t.name]) for t in self._tasks}


def is_torch_data(data: object) -> TypeGuard[Sequence[Dataset]]:
    """Whether `data` is a (train, test) pair of datasets rather than a name or folder."""
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(d, Dataset) for d in data)
    )


def torch_splits(
    data: Sequence[Dataset], tasks: Sequence[Task] | None
) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """The (train, test) pair as multi-task datasets; `MultiTaskDataset`s are taken as they
    are, other datasets need `tasks`."""
    if not is_torch_data(data):
        raise DataError("data: give a dataset name, a folder, or a (train, test) pair of Datasets.")
    splits = []
    for dataset, split in zip(data, ("train", "test")):
        if isinstance(dataset, MultiTaskDataset):
            splits.append(dataset)
        elif tasks is None:
            raise DataError(
                f"{type(dataset).__name__} ({split}): a torch Dataset does not name its tasks; "
                "give tasks=[Task(...), ...] (or a tasks YAML file) with it."
            )
        else:
            splits.append(TorchDataset(dataset, tasks, split))
    return splits[0], splits[1]


def data_label(data: DataSource) -> str:
    """How run.json records `data`: the name or folder, or the datasets' classes and sizes."""
    if is_torch_data(data):
        train, test = data
        return "python:" + "/".join(
            f"{type(d).__name__}[{len(d)}]"  # type: ignore[arg-type]
            for d in (train, test)
        )
    return str(data)
