"""Preprocessed NYUv2 and CityScapes folders, in the `.npy` layout of MTAN and LibMTL.

    ROOT/{train,val}/image/{i}.npy     (H, W, 3) floats in [0, 1], or uint8 0-255
    ROOT/{train,val}/label/{i}.npy     (H, W) class ids, -1 where unlabelled   (NYUv2: 13)
    ROOT/{train,val}/label_7/{i}.npy   or label_19/ (CityScapes: 7 or 19 classes)
    ROOT/{train,val}/depth/{i}.npy     (H, W, 1) or (H, W); 0 where unmeasured
    ROOT/{train,val}/normal/{i}.npy    (H, W, 3) unit vectors (NYUv2 only)

`val` is the standard evaluation split (used as test); our own val comes from train.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from onnxmtl.data.base import MultiTaskDataset, normalize_image
from onnxmtl.data.check import check_coverage, check_images, check_target, has_valid
from onnxmtl.errors import DataError
from onnxmtl.tasks import Task

IGNORE = 255
_SOURCE_SPLIT = {"train": "train", "test": "val"}


class FolderDataset(MultiTaskDataset):
    """NYUv2 (segmentation 13, depth, normals) or CityScapes (segmentation 7/19, depth)."""

    def __init__(self, root: str | Path, split: str = "train", classes: int | None = None):
        self.root = Path(root)
        if split not in _SOURCE_SPLIT:
            raise DataError(f"{root}: split must be 'train' or 'test', got {split!r}.")
        self.folder = self.root / _SOURCE_SPLIT[split]
        if not (self.folder / "image").is_dir():
            raise DataError(
                f"{self.folder}: no image/ folder; expected the NYUv2/CityScapes .npy layout "
                "ROOT/{train,val}/{image,label,depth[,normal]}/N.npy."
            )
        self.label_dir, self.classes = self._labels(classes)
        self.name = "nyuv2" if (self.folder / "normal").is_dir() else "cityscapes"
        self.count = len(list((self.folder / "image").glob("*.npy")))
        if self.count == 0:
            raise DataError(f"{self.folder / 'image'}: no .npy files.")
        for sub in self._target_dirs():
            found = len(list((self.folder / sub).glob("*.npy")))
            if found != self.count:
                raise DataError(
                    f"{self.folder / sub}: {found} files for {self.count} images; every "
                    "image needs each target."
                )
        first = self._load("image", 0)
        if first.ndim != 3 or first.shape[-1] != 3:
            raise DataError(
                f"{self.folder / 'image' / '0.npy'}: shape {first.shape}, expected (H, W, 3)."
            )
        self._size = first.shape[:2]

    def _labels(self, classes: int | None) -> tuple[str, int]:
        options = {"label": 13, "label_7": 7, "label_19": 19}
        present = [d for d in options if (self.folder / d).is_dir()]
        if classes is not None:
            present = [d for d in present if options[d] == classes or d == "label"]
        if not present:
            raise DataError(
                f"{self.folder}: no label/, label_7/ or label_19/ folder"
                + (f" for {classes} classes" if classes else "")
                + "."
            )
        chosen = present[0]
        return chosen, classes if chosen == "label" and classes else options[chosen]

    def _target_dirs(self) -> list[str]:
        dirs = [self.label_dir, "depth"]
        if (self.folder / "normal").is_dir():
            dirs.append("normal")
        return dirs

    def _load(self, sub: str, index: int) -> np.ndarray:
        path = self.folder / sub / f"{index}.npy"
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read ({exc}).") from exc

    def check(self, tasks: list[Task]) -> None:
        """Read every sample's files and check them for `tasks` (onnxmtl.data.check): one
        image size, labels in range or unlabelled (-1 or 255), finite depth and normals, and
        a measured pixel per dense task somewhere in the split."""
        dirs = {"seg": self.label_dir, "depth": "depth", "normal": "normal"}
        covered = dict.fromkeys((t.name for t in tasks), False)
        for index in range(self.count):
            image_path = self.folder / "image" / f"{index}.npy"
            image = self._load("image", index)
            if image.shape[:2] != self._size or image.ndim != 3:
                raise DataError(
                    f"{image_path}: shape {image.shape}, expected {(*self._size, 3)} like "
                    "0.npy; every image of a split needs the same size."
                )
            check_images(image[None], _named(image_path))
            for task in tasks:
                if task.name not in dirs:
                    continue
                path = self.folder / dirs[task.name] / f"{index}.npy"
                values = self._load(dirs[task.name], index)
                if values.shape[:2] != self._size:
                    raise DataError(
                        f"{path}: shape {values.shape}, expected {self._size} like its image."
                    )
                check_target(task, values[None], _named(path), unlabelled=(-1,))
                covered[task.name] = covered[task.name] or has_valid(task, values)
        for task in tasks:
            if task.name in dirs:
                check_coverage(task, covered[task.name], str(self.folder))

    def tasks(self) -> list[Task]:
        tasks = [
            Task("seg", "segmentation", self.classes, ignore_index=IGNORE),
            Task("depth", "depth"),
        ]
        if self.name == "nyuv2":
            tasks.append(Task("normal", "normals"))
        return tasks

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self._size)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        image = self._load("image", index)
        scale = 255.0 if image.dtype == np.uint8 else 1.0  # uint8 images are 0-255
        tensor = normalize_image(image.astype(np.float32) / scale)
        label = self._load(self.label_dir, index).astype(np.int64)
        label[(label < 0) | (label >= self.classes)] = IGNORE
        depth = self._load("depth", index).astype(np.float32)
        depth = depth[..., 0] if depth.ndim == 3 else depth
        targets = {
            "seg": torch.from_numpy(label),
            "depth": torch.from_numpy(depth).unsqueeze(0),
        }
        if self.name == "nyuv2":
            normal = self._load("normal", index).astype(np.float32)
            targets["normal"] = torch.from_numpy(np.ascontiguousarray(normal.transpose(2, 0, 1)))
        return tensor, targets


def _named(path: Path) -> Callable[[int], str]:
    """Names every sample of a check after the one file `path` it comes from."""
    return lambda _: str(path)
