"""Datasets: IDX parsing, multi-fashion, fashion-locate, scenes geometry, NYUv2/CityScapes
folders, splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from onnxmtl.data import (
    FashionLocate,
    FolderDataset,
    MultiFashion,
    Scenes,
    find_fashion_mnist,
    load_dataset,
    read_idx,
    split_indices,
)
from onnxmtl.data.fashion_locate import CANVAS, ITEM, SPREAD, place, tight_boxes
from onnxmtl.data.multi_fashion import GROUP_OF_CLASS, compose
from onnxmtl.data.scenes import GROUND, SKY, generate
from onnxmtl.errors import DataError
from tests.helpers import make_folder


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def fashion_dir(tmp_path):
    """A folder with the four Fashion-MNIST IDX files holding random items."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_idx_round_trip_and_errors(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", array, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), array)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short.idx")


def test_multi_fashion_is_deterministic_and_labels_follow_the_items(fashion_dir):
    a = MultiFashion("train", count=30, seed=3, root=fashion_dir)
    b = MultiFashion("train", count=30, seed=3, root=fashion_dir)
    c = MultiFashion("train", count=30, seed=4, root=fashion_dir)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    image, targets = a[5]
    assert image.shape == (3, 36, 36) and set(targets) == {"left", "right", "groups"}
    expected = torch.zeros(4)
    expected[GROUP_OF_CLASS[int(targets["left"])]] = 1
    expected[GROUP_OF_CLASS[int(targets["right"])]] = 1
    assert torch.equal(targets["groups"], expected)
    assert [t.name for t in a.tasks()] == ["left", "right", "groups"]
    assert MultiFashion("test", count=4, size=64, root=fashion_dir)[0][0].shape == (3, 64, 64)


def test_multi_fashion_places_the_items_in_opposite_corners():
    items = np.stack([np.full((28, 28), 100, np.uint8), np.full((28, 28), 200, np.uint8)])
    canvas, left, right = compose(items, np.array([0, 1]), count=200, seed=0)
    for image, a, b in zip(canvas, left, right):
        value = {0: 100, 1: 200}
        assert set(np.unique(image[:4, :4])) <= {0, value[a]}  # the left item only
        assert set(np.unique(image[-4:, -4:])) <= {0, value[b]}  # the right item only
        assert image[12:24, 12:24].min() == max(value[a], value[b])  # overlap: the max
    shifts = {(np.flatnonzero(im[:, 10])[0], np.flatnonzero(im[10])[0]) for im in canvas}
    assert shifts == {(r, c) for r in range(5) for c in range(5)}


needs_fashion_mnist = pytest.mark.skipif(
    not (find_fashion_mnist.__globals__["DEBIAN_DIR"] / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)


@needs_fashion_mnist
def test_real_fashion_mnist_is_read():
    data = load_dataset("multi-fashion", "test", count=100)
    assert len(data) == 100 and data.images.max() == 255


def test_missing_fashion_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        MultiFashion("train", root=tmp_path)


def pixel_box(image: np.ndarray) -> list[int]:
    """(top, left, bottom, right), exclusive, of an image's non-zero pixels."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]


def test_tight_boxes_find_the_item_pixels():
    items = np.zeros((3, ITEM, ITEM), np.uint8)
    items[0, 5:21, 8:16] = 7
    items[1, 0, 27] = 1
    boxes = tight_boxes(items)
    assert boxes.tolist() == [[5, 8, 21, 16], [0, 27, 1, 28], [0, 0, ITEM, ITEM]]  # empty: tile


def test_fashion_locate_places_whole_items_everywhere():
    items = np.zeros((2, ITEM, ITEM), np.uint8)
    items[0, 5:21, 8:16] = 100
    items[1, 2:26, 1:27] = 200
    canvas, labels, boxes = place(items, np.array([3, 8]), count=4000, seed=0)
    offsets = set()
    for image, label, box in zip(canvas, labels, boxes):
        assert pixel_box(image) == box.tolist()
        k = int(label == 8)
        r, c = box[:2] - ((5, 8), (2, 1))[k]
        assert np.array_equal(image[r : r + ITEM, c : c + ITEM], items[k])  # the whole item
        assert image.sum() == items[k].sum()  # and nothing else
        offsets.add((r, c))
    assert offsets == {(r, c) for r in range(CANVAS - ITEM + 1) for c in range(CANVAS - ITEM + 1)}


def test_fashion_locate_is_deterministic_and_where_is_the_item(fashion_dir):
    a = FashionLocate("train", count=30, seed=3, root=fashion_dir)
    b = FashionLocate("train", count=30, seed=3, root=fashion_dir)
    c = FashionLocate("train", count=30, seed=4, root=fashion_dir)
    test = FashionLocate("test", count=30, seed=3, root=fashion_dir)
    assert np.array_equal(a.images, b.images) and np.array_equal(
        a.targets["where"], b.targets["where"]
    )
    assert not np.array_equal(a.images, c.images) and not np.array_equal(a.images, test.images)
    assert not np.array_equal(
        a.targets["where"], test.targets["where"]
    )  # the test split has its own places
    assert [t.name for t in a.tasks()] == ["item", "where"]
    assert [t.kind for t in a.tasks()] == ["classification", "regression"]
    for index in range(len(a)):
        image, targets = a[index]
        assert image.shape == (3, CANVAS, CANVAS) and set(targets) == {"item", "where"}
        top, left, bottom, right = pixel_box(a.images[index])
        centre = np.array([top + bottom, left + right]) / 2
        assert torch.allclose(
            targets["where"], torch.tensor((centre - CANVAS / 2) / SPREAD).float()
        )
    large = FashionLocate("train", count=30, size=64, seed=3, root=fashion_dir)
    assert large[0][0].shape == (3, 64, 64) and np.array_equal(
        large.targets["where"], a.targets["where"]
    )


def test_fashion_locate_by_name(fashion_dir):
    data = load_dataset("fashion-locate", "test", count=5, root=fashion_dir)
    assert isinstance(data, FashionLocate) and len(data) == 5 and data.name == "fashion-locate"
    with pytest.raises(DataError, match="fashion-locate.*bad option"):
        load_dataset("fashion-locate", count=5, classes=3, root=fashion_dir)
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        FashionLocate("train", root=fashion_dir / "nowhere")


@needs_fashion_mnist
def test_fashion_locate_on_real_items():
    data = load_dataset("fashion-locate", "test", count=200)
    for image, box in zip(data.images, data.boxes):
        assert pixel_box(image) == box.tolist()
    assert set(data.targets["item"].tolist()) == set(range(10))
    assert np.allclose(data.targets["where"].mean(0), 0, atol=0.2)  # zero mean, unit variance
    assert np.allclose(data.targets["where"].std(0), 1, atol=0.2)


def test_scenes_targets_agree_with_each_other():
    data = generate(6, 48, seed=1)
    seg, depth, normal = data["seg"], data["depth"], data["normal"]
    sky = seg == SKY
    assert sky.any() and (~sky).any()
    assert np.all(depth[sky] == 0) and np.all(depth[~sky] > 0)
    norms = np.linalg.norm(normal, axis=-1)
    assert np.allclose(norms[~sky], 1, atol=1e-5) and np.all(norms[sky] == 0)
    for i in range(len(seg)):  # the ground is flat: one normal per scene, pointing up-ish
        ground = normal[i][seg[i] == GROUND]
        assert np.allclose(ground, ground[0], atol=1e-5) and ground[0][1] > 0
    assert np.array_equal(generate(2, 32, 5)["rgb"], generate(2, 32, 5)["rgb"])


def test_scenes_dataset_is_cached(tmp_path):
    first = Scenes("train", count=3, size=32, seed=0, cache_dir=tmp_path)
    files = list(tmp_path.glob("scenes-*.npz"))
    assert len(files) == 1
    again = Scenes("train", count=3, size=32, seed=0, cache_dir=tmp_path)
    assert np.array_equal(first.rgb, again.rgb)
    image, targets = again[1]
    assert image.shape == (3, 32, 32) and targets["normal"].shape == (3, 32, 32)
    test = Scenes("test", count=3, size=32, seed=0, cache_dir=tmp_path)
    assert not np.array_equal(test.rgb, first.rgb)


@pytest.mark.parametrize("nyu", [True, False], ids=["nyuv2", "cityscapes"])
def test_folder_layouts(tmp_path, nyu):
    make_folder(tmp_path, "train", 3, nyu)
    make_folder(tmp_path, "val", 2, nyu)
    train, test = load_dataset(tmp_path, "train"), load_dataset(tmp_path, "test")
    assert (len(train), len(test)) == (3, 2)
    assert train.name == ("nyuv2" if nyu else "cityscapes")
    assert [t.num_outputs for t in train.tasks()][0] == (13 if nyu else 7)
    image, targets = train[0]
    assert image.shape == (3, 6, 8) and targets["depth"].shape == (1, 6, 8)
    raw = np.load(tmp_path / "train" / ("label" if nyu else "label_7") / "0.npy")
    assert torch.equal(targets["seg"] == 255, torch.from_numpy(raw < 0))
    assert ("normal" in targets) == nyu


def test_bad_folders_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no image/ folder"):
        FolderDataset(tmp_path)
    make_folder(tmp_path, "train", 3, nyu=True)
    (tmp_path / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(DataError, match=r"depth: 2 files for 3 images"):
        FolderDataset(tmp_path)
    with pytest.raises(DataError, match="not a dataset name"):
        load_dataset(tmp_path / "nowhere")


def test_splits_are_disjoint_deterministic_halves():
    a, b = split_indices(101, seed=0), split_indices(101, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(a["val"]) == 10 and len(a["train"]) == 91
    assert set(a["train1"]) | set(a["train2"]) == set(a["train"])
    assert not set(a["train1"]) & set(a["train2"]) and not set(a["val"]) & set(a["train"])
    assert not np.array_equal(split_indices(101, seed=1)["val"], a["val"])


def test_a_registered_dataset_loads_by_name_and_is_listed(tmp_path):
    from onnxmtl.data import DATASETS, Scenes, load_dataset, register_dataset

    asked = []

    def small_scenes(split: str, **options) -> Scenes:
        asked.append((split, options))
        return Scenes(split, count=6, size=16, cache_dir=tmp_path, **options)

    register_dataset("small-scenes", small_scenes)
    try:
        train = load_dataset("small-scenes", "train", seed=3)
        assert isinstance(train, Scenes) and len(train) == 6
        load_dataset("small-scenes", "test")
        assert asked == [("train", {"seed": 3}), ("test", {})]
        with pytest.raises(DataError, match="small-scenes"):
            load_dataset(str(tmp_path / "nowhere"))
    finally:
        DATASETS.pop("small-scenes")
    with pytest.raises(DataError, match="not a dataset name"):
        load_dataset("small-scenes")
