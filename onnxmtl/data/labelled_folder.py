"""A dataset folder anyone can write without code: images, a table of labels, dense targets.

    ROOT/tasks.yaml            the tasks (as for --tasks): name, kind, num_outputs...
    ROOT/images/NAME.png|jpg   images of any size, resized to `size`
    ROOT/labels.csv            column `image` (a file name in images/), one column per task
      or labels.jsonl          {"image": NAME, TASK: value, ...} per line
                               classification: a class index; multilabel: indices joined by
                               ';' (CSV) or a list (JSONL); regression: values joined by ';'
                               or a list
    ROOT/TASK/STEM.png|npy     dense targets by the image's file stem: segmentation masks
                               (class ids; 255 or negative: ignored), depth maps (0 is unmeasured;
                               16-bit PNG or .npy), normals (.npy, (H, W, 3))
    ROOT/splits/{train,val,test}.txt   optional lists of image names; otherwise a fixed
                               seeded `test_fraction` of the images is the test split, and
                               validation a seeded `val_fraction` of the training images

A sample may lack any task's label (an empty cell, a missing key, no target file): that task's
loss and metrics skip it (`unlabelled`).

Images and targets are read once into memory ((H, W, 3) uint8 images at `size`); dense targets are
resized with nearest neighbours, so masks keep their ids and invalid pixels stay invalid.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from onnxmtl.data.base import ArrayDataset
from onnxmtl.errors import ConfigError, DataError
from onnxmtl.tasks import Task, load_tasks

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_SEED = 0  # the test split must not move with the training seed


def is_labelled_folder(path: Path) -> bool:
    """Whether `path` is in this layout (it has tasks.yaml and images/)."""
    return (path / "tasks.yaml").is_file() and (path / "images").is_dir()


def unlabelled(task: Task, size: tuple[int, int]) -> np.ndarray:
    """The target of a sample that `task` does not label (partial labels): the ignore value
    for classes, NaN for multilabel and regression values, an all-ignored mask, a depth of 0
    (unmeasured) or zero normals; losses and metrics skip it."""
    if task.kind == "classification":
        return np.array(task.ignore_index, np.int64)
    if task.kind == "segmentation":
        return np.full(size, task.ignore_index, np.int64)
    if task.kind == "depth":
        return np.zeros(size, np.float32)
    if task.kind == "normals":
        return np.zeros((3, *size), np.float32)
    return np.full(task.outputs, np.nan, np.float32)


class LabelledFolder(ArrayDataset):
    """One split ('train' or 'test') of a labelled folder."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: int | None = None,
        test_fraction: float = 0.2,
        count: int | None = None,
        strict: bool = True,
    ) -> None:
        """`strict` stops at the first bad file or label; otherwise the samples holding one
        are left out and listed in `problems` as (kind, message) for `onnxmtl data check`."""
        self.root = Path(root)
        self.name = self.root.name
        try:
            self._tasks = load_tasks(self.root / "tasks.yaml")
        except ConfigError as exc:
            raise DataError(str(exc)) from exc
        labels = self._read_labels()
        names = self._split(sorted(labels) if labels else self._image_files(), split, test_fraction)
        if count is not None:
            names = names[:count]
        if not names:
            raise DataError(f"{self.root}: the {split} split holds no image.")
        self.size = (size, size) if size else self._open(names[0]).size[::-1]
        self.problems: list[tuple[str, str]] = []
        kept, images = [], []
        targets: dict[str, list[np.ndarray]] = {t.name: [] for t in self._tasks}
        for name in names:
            try:
                image = self._image(name)
                sample = {t.name: self._target(t, name, labels) for t in self._tasks}
            except DataError as exc:
                if strict:
                    raise
                self.problems.append((exc.kind, str(exc)))
                continue
            kept.append(name)
            images.append(image)
            for task_name, value in sample.items():
                targets[task_name].append(value)
        if not kept:
            raise DataError(f"{self.root}: no sample of the {split} split can be read.")
        self.names = kept
        self.images = np.stack(images)
        self.targets = {name: np.stack(values) for name, values in targets.items()}

    def tasks(self) -> list[Task]:
        return list(self._tasks)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size

    # -- reading -------------------------------------------------------------------------
    def _image_files(self) -> list[str]:
        files = sorted(
            p.name for p in (self.root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"{self.root / 'images'}: no PNG or JPEG image.")
        return files

    def _read_labels(self) -> dict[str, dict[str, Any]]:
        """Per image name, its sample-level labels (empty when the tasks are all dense)."""
        csv_path, jsonl_path = self.root / "labels.csv", self.root / "labels.jsonl"
        rows: list[dict[str, Any]] = []
        if csv_path.is_file():
            try:
                rows = list(csv.DictReader(_text(csv_path).splitlines()))
            except csv.Error as exc:
                raise DataError(f"{csv_path}: not a readable CSV file ({exc}).") from exc
            where = csv_path
        elif jsonl_path.is_file():
            where = jsonl_path
            for number, line in enumerate(_text(jsonl_path).splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{where}: line {number} is not JSON ({exc.msg}).") from exc
        elif any(t.kind not in ("segmentation", "depth", "normals") for t in self._tasks):
            raise DataError(
                f"{self.root}: no labels.csv or labels.jsonl for the tasks that label whole "
                "images; add one with an `image` column and a column per task."
            )
        else:
            return {}
        labels: dict[str, dict[str, Any]] = {}
        first: dict[str, int] = {}
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict) or "image" not in row or not row["image"]:
                raise DataError(f"{where}: row {number} has no `image` (the image's file name).")
            name = str(row["image"])
            if name in labels:
                raise DataError(
                    f"{where}: rows {first[name]} and {number} both label image {name!r}; "
                    "keep one row per image."
                )
            labels[name], first[name] = row, number
        return labels

    def _listed(self, split: str, names: list[str]) -> list[str] | None:
        """The image names in splits/SPLIT.txt, or None when there is no such file."""
        listed = self.root / "splits" / f"{split}.txt"
        if not listed.is_file():
            return None
        chosen = [line.strip() for line in _text(listed).splitlines() if line.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise DataError(f"{listed}: {len(unknown)} unknown image(s), e.g. {unknown[0]!r}.")
        return chosen

    def _split(self, names: list[str], split: str, test_fraction: float) -> list[str]:
        """The split's image names; the train split also holds those of splits/val.txt."""
        if split not in ("train", "test"):
            raise DataError(f"{self.root}: split must be 'train' or 'test', got {split!r}.")
        self._val = self._listed("val", names) or []
        chosen = self._listed(split, names)
        other = self._listed("test" if split == "train" else "train", names)
        if chosen is not None and other is not None:
            both = set(chosen) & set(other)
            if both:
                raise DataError(
                    f"{self.root / 'splits'}: train.txt and test.txt both list "
                    f"{len(both)} image(s), e.g. {sorted(both)[0]!r}; the splits must not overlap."
                )
        if chosen is None and other is not None:  # the split is every image the other leaves
            taken = set(other) | set(self._val)
            chosen = [n for n in names if n not in taken]
        if chosen is None:
            if not 0 < test_fraction < 1:
                raise DataError(
                    f"{self.root}: test_fraction must be in (0, 1), got {test_fraction}."
                )
            pool = [n for n in names if n not in set(self._val)]  # val is never test
            order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
            n_test = max(1, round(len(pool) * test_fraction))
            picked = order[:n_test] if split == "test" else order[n_test:]
            chosen = [pool[i] for i in sorted(picked)]
        test = set(chosen if split == "test" else other or [])  # other: test.txt's list
        if test & set(self._val):
            raise DataError(
                f"{self.root / 'splits' / 'val.txt'}: lists test image(s), e.g. "
                f"{sorted(test & set(self._val))[0]!r}; validation and test must not overlap."
            )
        if split == "test":
            return chosen
        return chosen + [n for n in self._val if n not in set(chosen)]

    def val_indices(self) -> np.ndarray | None:
        """Positions of splits/val.txt's images in this (train) split, or None without it."""
        if not self._val:
            return None
        val = set(self._val)
        return np.array([i for i, n in enumerate(self.names) if n in val], np.int64)

    def _open(self, name: str) -> Image.Image:
        path = _inside(self.root / "images", name)
        if path.exists() and not path.is_file():  # a FIFO or a device would block the read
            raise DataError(f"{path}: not a regular file.", "unreadable image")
        try:
            image = Image.open(path)
            image.load()
        except FileNotFoundError as exc:
            raise DataError(
                f"{path}: listed in the labels but not found.", "missing image"
            ) from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: not a readable image ({exc}).", "unreadable image") from exc
        except Image.DecompressionBombError as exc:
            raise DataError(
                f"{path}: more pixels than Pillow opens (twice its limit of "
                f"{Image.MAX_IMAGE_PIXELS:,}, against decompression bombs); resize the image.",
                "unreadable image",
            ) from exc
        return image

    def _image(self, name: str) -> np.ndarray:
        image = eight_bit(self._open(name)).convert("RGB")
        if (image.height, image.width) != self.size:
            image = image.resize(self.size[::-1], Image.Resampling.BILINEAR)
        return np.asarray(image)

    def _target(self, task: Task, name: str, labels: dict[str, dict]) -> np.ndarray:
        if task.kind in ("segmentation", "depth", "normals"):
            return self._dense(task, name)
        cell = labels.get(name, {}).get(task.name)
        if cell is None or cell == "":
            return unlabelled(task, self.size)
        return self._parse(task, name, cell)

    def _parse(self, task: Task, name: str, cell: Any) -> np.ndarray:
        items = cell if isinstance(cell, list) else str(cell).split(";")
        try:
            if task.kind == "classification":
                return np.array(_class_id(cell, task.outputs), np.int64)
            if task.kind == "multilabel":
                vector = np.zeros(task.outputs, np.float32)
                vector[[_class_id(i, task.outputs) for i in items]] = 1
                return vector
            values = np.array([float(v) for v in items], np.float32)
        except (ValueError, IndexError, OverflowError, TypeError) as exc:
            raise DataError(
                f"{self.root}: image {name!r}, task '{task.name}': cannot read {cell!r} as a "
                f"{task.kind} label ({exc}).",
                "bad label",
            ) from exc
        if len(values) != task.num_outputs:
            raise DataError(
                f"{self.root}: image {name!r}, task '{task.name}': {len(values)} values for "
                f"{task.num_outputs} outputs.",
                "bad label",
            )
        return values

    def _dense(self, task: Task, name: str) -> np.ndarray:
        stem = Path(name).stem
        folder = self.root / task.name
        found = [
            folder / f"{stem}{s}" for s in (".npy", ".png") if (folder / f"{stem}{s}").is_file()
        ]
        if not found:
            return unlabelled(task, self.size)
        path = _inside(folder, found[0].name)
        try:
            array = (
                np.load(path, allow_pickle=False)
                if path.suffix == ".npy"
                else np.asarray(Image.open(path))
            )
        except (OSError, ValueError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: not a readable target ({exc}).", "unreadable target") from exc
        height, width = self._open(name).size[::-1]
        if tuple(array.shape[:2]) != (height, width):
            raise DataError(
                f"{path}: size {tuple(array.shape[:2])} differs from its image's "
                f"{(height, width)}.",
                "target of another size",
            )
        rows = np.arange(self.size[0]) * array.shape[0] // self.size[0]
        cols = np.arange(self.size[1]) * array.shape[1] // self.size[1]
        array = array[rows][:, cols]  # nearest neighbours
        if task.kind in ("segmentation", "depth") and array.ndim != 2:
            raise DataError(
                f"{path}: a {task.kind} target must be one value per pixel (a one-channel "
                f"image or an (H, W) array), got shape {array.shape}; save class ids or depths "
                "as a grayscale, palette or 16-bit PNG, not RGB.",
                "bad target",
            )
        if task.kind == "segmentation":
            array = array.astype(np.int64)
            array[(array == 255) | (array < 0)] = task.ignore_index
            return array
        if task.kind == "normals":
            if array.ndim != 3 or array.shape[2] != 3:
                raise DataError(
                    f"{path}: normals must be (H, W, 3), got {array.shape}.", "bad target"
                )
            return array.astype(np.float32).transpose(2, 0, 1).copy()
        return array.astype(np.float32)


def _class_id(value: Any, classes: int) -> int:
    """A class index in [0, classes) written as an integer (7, "7", 7.0), else ValueError: a
    fraction, a negative index (which would count from the end) or one past the classes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a class index")
    number = float(str(value).strip())
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    index = int(number)
    if not 0 <= index < classes:
        raise ValueError(f"class {index} outside [0, {classes})")
    return index


def _inside(folder: Path, name: str) -> Path:
    """`folder / name`, refused with a DataError where it leads outside `folder` (a name
    with '..' or an absolute path, or a symbolic link that points out): a dataset folder
    reads nothing but its own files."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise DataError(
            f"{folder}: the image name {name!r} leads outside this folder; name files inside "
            "it (no '..', no absolute path, no link that points out).",
            "outside the folder",
        )
    return path


def _text(path: Path) -> str:
    """A label or split file's text (UTF-8, with or without the BOM spreadsheets write)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 (CSV UTF-8)."
        ) from exc


def eight_bit(image: Image.Image) -> Image.Image:
    """A 16- or 32-bit greyscale image scaled to 8 bits over its type's full range (Pillow's
    own conversion clips it, which turns a 16-bit image white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        scaled = np.asarray(image, np.float64) / 65535 * 255
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    if image.mode == "I":
        values = np.asarray(image, np.float64)
        top = 65535 if values.max() > 255 else 255
        return Image.fromarray(np.round(values / top * 255).clip(0, 255).astype(np.uint8))
    return image
