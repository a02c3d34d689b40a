"""What every dataset gives: samples of (image, {task: target}), its tasks, and seeded splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from onnxmtl.data.check import check_arrays
from onnxmtl.errors import DataError
from onnxmtl.tasks import Task

SPLITS = ("train", "train1", "train2", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How the built-in datasets and dataset folders turn a stored image into the model's input:
# what a deployed model's caller must do too (the exported file's metadata carries it).
PREPROCESSING: dict[str, Any] = {
    "description": f"RGB (grey images repeated) scaled to [0, 1], then per channel minus mean "
    f"{IMAGENET_MEAN} over std {IMAGENET_STD}",
    "channels": "RGB",
    "scale": 1 / 255,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


class MultiTaskDataset(Dataset):
    """A dataset whose samples are (image (3, H, W) float, {task name: target})."""

    name = "dataset"
    preprocessing = PREPROCESSING  # what an image went through before the model

    def __len__(self) -> int:
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        """The tasks this dataset labels, with their default heads and losses."""
        raise NotImplementedError

    @property
    def image_size(self) -> tuple[int, int]:
        raise NotImplementedError

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """The split's raw images and targets by task name (axis 0: samples) where the
        dataset holds them in memory, for `check`; None where it does not."""
        return None

    def val_indices(self) -> np.ndarray | None:
        """The samples of this (training) split that the dataset itself holds out for
        validation (its own split files), or None to draw them by the seed."""
        return None

    def check(self, tasks: list[Task]) -> None:
        """Raise a DataError naming the sample where an image or a target of `tasks` is one
        training cannot use (onnxmtl.data.check); a no-op for datasets without `arrays`."""
        arrays = self.arrays()
        if arrays is not None:
            check_arrays(f"dataset '{self.name}'", *arrays, tasks)


class ArrayDataset(MultiTaskDataset):
    """A split held in memory: uint8 `images` (axis 0: samples) and one array of targets per
    task in `targets`, set by the subclass."""

    images: np.ndarray
    targets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.images, self.targets

    def __getitem__(self, index: int):
        image = normalize_image(self.images[index].astype(np.float32) / 255.0)
        return image, {
            name: torch.from_numpy(np.asarray(values[index]))
            for name, values in self.targets.items()
        }


def split_indices(
    count: int, seed: int, val_fraction: float = 0.1, val: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Deterministic train / train1 / train2 / val indices over `count` training samples.

    val is `val` where the dataset gives it, else a seeded `val_fraction` of them; train is
    the rest, in a seeded order; train1 and train2 are its two halves (AutoMTL's split:
    weights train on train1, the policy on train2).
    """
    if count < 4:
        raise DataError(f"need at least 4 training samples to split, got {count}.")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(count)
    if val is None:
        n_val = max(1, round(count * val_fraction))
        val, train = np.sort(order[:n_val]), order[n_val:]
    else:
        val = np.sort(np.asarray(val, np.int64))
        train = order[~np.isin(order, val)]
        if not len(val) or len(train) < 2:
            raise DataError(
                f"the dataset's validation list holds {len(val)} of {count} training samples; "
                "it needs at least one, and two must be left to train on."
            )
    half = len(train) // 2
    return {
        "train": np.sort(train),
        "train1": np.sort(train[:half]),
        "train2": np.sort(train[half:]),
        "val": val,
    }


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(H, W, 3) or (H, W) values in [0, 1] as a normalised (3, H, W) float tensor."""
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    if x.dim() == 2:
        x = x.unsqueeze(-1).expand(-1, -1, 3)
    x = x.permute(2, 0, 1)
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)
    return (x - mean_t) / std_t
