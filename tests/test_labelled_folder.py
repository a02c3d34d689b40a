"""A labelled dataset folder (images, a CSV or JSONL of labels, dense targets by file stem),
built from real Fashion-MNIST items saved as PNG files: read back exactly, resized with the
same nearest/bilinear rules, split by files or by a fixed seed, bad files named in one line,
and trained on end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import onnxmtl
from onnxmtl.compiler import load_supermodel
from onnxmtl.data import load_dataset, split_indices
from onnxmtl.data.fashion_mnist import DEBIAN_DIR, load_fashion_mnist
from onnxmtl.data.labelled_folder import LabelledFolder
from onnxmtl.errors import DataError, RunFolderError
from onnxmtl.runtime import session
from onnxmtl.training import SearchConfig, Trainer
from tests.conftest import ROOT
from tests.helpers import assert_clean_error, run_cli

pytestmark = pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
COUNT = 60
TASKS = """tasks:
  - {name: item, kind: classification, num_outputs: 10}
  - {name: ink, kind: regression, num_outputs: 1}
  - {name: shape, kind: segmentation, num_outputs: 2, head: conv}
"""


def write_folder(root, labels: str = "csv", size: int = 28):
    """COUNT real items as PNG (every third one, from the second, at 2x size), their class
    and ink share in labels.csv (or .jsonl), and a mask of their pixels in shape/."""
    images, classes = load_fashion_mnist("test")
    (root / "images").mkdir(parents=True)
    (root / "shape").mkdir()
    (root / "tasks.yaml").write_text(TASKS)
    rows = []
    for i in range(COUNT):
        item = images[i]
        if i % 3 == 1:
            item = np.kron(item, np.ones((2, 2), np.uint8))
        name = f"item{i:03d}.png"
        Image.fromarray(item).save(root / "images" / name)
        Image.fromarray((item > 0).astype(np.uint8)).save(root / "shape" / f"item{i:03d}.png")
        rows.append({"image": name, "item": int(classes[i]), "ink": float((item > 0).mean())})
    if labels == "csv":
        _write_rows(root, rows)
    else:
        (root / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root, images[:COUNT], classes[:COUNT]


@pytest.mark.parametrize("labels", ["csv", "jsonl"])
def test_folder_reads_back_the_items_and_their_labels(tmp_path, labels):
    root, images, classes = write_folder(tmp_path / "shop", labels)
    train = load_dataset(root, "train")
    test = load_dataset(root, "test")
    assert isinstance(train, LabelledFolder) and [t.name for t in train.tasks()] == [
        "item",
        "ink",
        "shape",
    ]
    assert len(train) + len(test) == COUNT and len(test) == round(COUNT * 0.2)
    assert not set(train.names) & set(test.names)
    assert train.image_size == (28, 28)  # the first image's size
    for data in (train, test):
        for i, name in enumerate(data.names):
            index = int(name[4:7])
            assert data.targets["item"][i] == classes[index]
            if index % 3 != 1:  # stored at 28x28: read back exactly
                assert np.array_equal(data.images[i][..., 0], images[index])
                assert np.array_equal(data.targets["shape"][i], images[index] > 0)
            else:  # stored at 56x56, resized: the mask by nearest neighbours
                assert np.array_equal(data.targets["shape"][i], images[index] > 0)
            expected_ink = ((images[index] > 0).mean(),)
            assert data.targets["ink"][i] == pytest.approx(expected_ink, abs=1e-6)
    image, targets = train[0]
    assert image.shape == (3, 28, 28) and targets["shape"].shape == (28, 28)
    assert load_dataset(root, "train", size=40)[0][0].shape == (3, 40, 40)


def test_split_files_choose_the_splits(tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("item001.png\nitem002.png\nitem004.png\n")
    (root / "splits" / "test.txt").write_text("item005.png\n")
    assert load_dataset(root, "train").names == ["item001.png", "item002.png", "item004.png"]
    assert load_dataset(root, "test").names == ["item005.png"]
    (root / "splits" / "test.txt").write_text("nothing.png\n")
    with pytest.raises(DataError, match="test.txt: 1 unknown image"):
        load_dataset(root, "test")


def _corrupt_image(root):
    (root / "images" / "item007.png").write_bytes(b"not a png")
    return "item007.png: not a readable image"


def _mask_of_another_size(root):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "shape" / "item008.png")
    return "item008.png: size (10, 10) differs from its image's (28, 28)"


def _bad_class(root):
    text = (root / "labels.csv").read_text().splitlines()
    text[13] = text[13].replace(text[13].split(",")[1], "shirt", 1)
    (root / "labels.csv").write_text("\n".join(text))
    return "image 'item012.png', task 'item': cannot read 'shirt' as a classification label"


def _rgb_mask(root):
    mask = sorted((root / "shape").glob("*.png"))[0]
    width, height = Image.open(mask).size
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(mask)
    return f"{mask.name}: a segmentation target must be one value per pixel"


def _csv_field_over_the_parser_limit(root):
    lines = (root / "labels.csv").read_text().splitlines()
    lines[3] += "x" * 200_000  # csv's field limit is 131,072 characters
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return "labels.csv: not a readable CSV file"


@pytest.mark.parametrize(
    "break_it",
    [
        _corrupt_image,
        _mask_of_another_size,
        _bad_class,
        _rgb_mask,
        _csv_field_over_the_parser_limit,
    ],
)
def test_a_bad_file_or_label_is_named(tmp_path, break_it):
    root, _, _ = write_folder(tmp_path / "shop")
    message = break_it(root)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        for split in ("train", "test"):
            load_dataset(root, split)


def test_a_search_trains_on_the_folder(tiny_export, tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    config = {"batch_size": 4, "warmup_steps": 2, "search_steps": 3, "post_train_steps": 2}
    config["data"] = {"size": 32}
    result = onnxmtl.search(
        tiny_export("legacy17"), root, tmp_path / "run", config=config, progress=False
    )
    assert set(result.metrics["test"]) == {"item", "ink", "shape"}
    assert 0 <= result.metrics["test"]["shape"]["miou"] <= 1


def test_data_check_summarises_a_good_folder(tmp_path):
    root, _, classes = write_folder(tmp_path / "shop")
    proc = run_cli("data", "check", str(root))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"train: {COUNT - round(COUNT * 0.2)} samples, images 28x28"
    train = load_dataset(root, "train")
    histogram = np.bincount(train.targets["item"], minlength=10)
    expected = " ".join(f"{c}:{n}" for c, n in enumerate(histogram))
    line = f"  item (classification): {len(train)} of {len(train)} labelled; per class {expected}"
    assert line in lines
    assert any(line.startswith("  shape (segmentation):") for line in lines)
    assert lines[-1] == f"ok: {root} can be trained on"


def test_data_check_lists_every_bad_file_and_exits_2(tiny_export, tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    messages = [_corrupt_image(root), _mask_of_another_size(root)]
    (root / "images" / "item009.png").write_bytes(b"")
    proc = run_cli("data", "check", str(root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    problems = [line for line in proc.stdout.splitlines() if line.startswith("problem")]
    assert len(problems) == 3
    for message in messages:
        assert any(message in line for line in problems), message
    errors = proc.stderr.strip().splitlines()
    assert sorted(errors) == sorted(
        [
            f"error: {root}: 2 x unreadable image (listed above); fix or remove those files "
            "and check again.",
            f"error: {root}: 1 x target of another size (listed above); fix or remove those "
            "files and check again.",
        ]
    )
    # Training refuses the same folder with one problem's line, before any step.
    out = tmp_path / "r"
    proc = run_cli("search", str(tiny_export("legacy17")), "--data", str(root), "--out", str(out))
    assert_clean_error(proc)
    assert any(message in proc.stderr for message in messages), proc.stderr
    assert not (out / "checkpoint.pt").exists()


def test_partial_labels_are_skipped_and_counted(tiny_export, tmp_path):
    """Some images lack a class, an ink value or a mask: they load, data check counts the
    labels per task, and a search trains on the rest."""
    root, _, _ = write_folder(tmp_path / "shop")
    rows = (root / "labels.csv").read_text().splitlines()
    for i in range(1, len(rows)):
        name, item, ink = rows[i].split(",")
        index = int(name[4:7])
        rows[i] = ",".join([name, "" if index % 4 == 0 else item, "" if index % 3 == 0 else ink])
    (root / "labels.csv").write_text("\n".join(rows))
    for index in range(0, COUNT, 5):
        (root / "shape" / f"item{index:03d}.png").unlink()
    train = load_dataset(root, "train")
    indices = np.array([int(n[4:7]) for n in train.names])
    item, ink, shape = (train.targets[k] for k in ("item", "ink", "shape"))
    assert np.array_equal(item == 255, indices % 4 == 0)
    assert np.array_equal(np.isnan(ink[:, 0]), indices % 3 == 0)
    assert np.array_equal((shape == 255).all(axis=(1, 2)), indices % 5 == 0)
    proc = run_cli("data", "check", str(root))
    assert proc.returncode == 0, proc.stderr
    n = len(train)
    assert f"{int((indices % 4 != 0).sum())} of {n} labelled" in proc.stdout
    assert f"{int((indices % 3 != 0).sum())} of {n} labelled" in proc.stdout
    assert f"{int((indices % 5 != 0).sum())} of {n} masks" in proc.stdout
    config = tmp_path / "tiny.yaml"
    config.write_text("batch_size: 4\nwarmup_steps: 2\nsearch_steps: 3\npost_train_steps: 2\n")
    out = tmp_path / "run"
    proc = run_cli(
        "run",
        str(tiny_export("legacy17")),
        "--data",
        str(root),
        "--out",
        str(out),
        "--config",
        str(config),
        "--batch-sizes",
        "1",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    for method in ("searched", "all-shared", "single-task"):
        for values in results["methods"][method]["metrics"].values():
            assert all(np.isfinite(v) for v in values.values()), method


def test_a_val_list_is_the_validation_split(tiny_export, tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    (root / "splits").mkdir()
    val = ["item003.png", "item010.png", "item020.png", "item033.png"]
    (root / "splits" / "val.txt").write_text("\n".join(val))
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    assert not set(val) & set(test.names) and set(val) <= set(train.names)
    assert len(train) + len(test) == COUNT
    indices = train.val_indices()
    assert sorted(train.names[i] for i in indices) == val
    splits = split_indices(len(train), 3, 0.1, indices)
    assert [train.names[i] for i in splits["val"]] == val
    assert sorted([*splits["train"], *splits["val"]]) == list(range(len(train)))
    assert sorted([*splits["train1"], *splits["train2"]]) == sorted(splits["train"])
    model = onnxmtl.compile(onnxmtl.load(tiny_export("legacy17")), train.tasks())
    trainer = Trainer(
        model, train, SearchConfig().with_options(batch_size=4), tmp_path / "run", progress=False
    )
    assert [train.names[i] for i in trainer.splits["val"]] == val
    (root / "splits" / "test.txt").write_text("item010.png\nitem011.png\n")
    with pytest.raises(DataError, match="val.txt: lists test image"):
        load_dataset(root, "test")


def test_depth_maps_as_16_bit_png_and_npy(tmp_path):
    """Depth read from 16-bit PNG files (values above 255 kept) and from .npy, 0 unmeasured."""
    root = tmp_path / "depth"
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "tasks.yaml").write_text("tasks:\n  - {name: depth, kind: depth}\n")
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 60000, (6, 12, 16)).astype(np.uint16)
    for i, depth in enumerate(maps):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        if i % 2:
            np.save(root / "depth" / f"{i}.npy", depth.astype(np.float32))
        else:
            Image.fromarray(depth).save(root / "depth" / f"{i}.png")
    data = load_dataset(root, "train")
    for name, got in zip(data.names, data.targets["depth"]):
        assert np.array_equal(got, maps[int(name[0])].astype(np.float32)), name


def test_a_run_exports_models_that_take_the_folders_images_as_they_are(
    tmp_path, tiny_export, monkeypatch
):
    """The folder's images are 28x28, the backbone's input 32x32: training resized them, and
    every exported model takes them at 28x28 and resizes them the same way."""
    monkeypatch.setenv("ONNXMTL_CACHE", str(tmp_path / "cache"))
    root, _, _ = write_folder(tmp_path / "shop")
    config = {"batch_size": 4, "warmup_steps": 1, "search_steps": 2, "post_train_steps": 1}
    out = tmp_path / "run"
    result = onnxmtl.run(
        tiny_export("legacy17"), root, out, config=config, baselines=("all-shared",),
        bench_repeats=2, progress=False,
    )  # fmt: skip
    image, _ = load_dataset(root, "test")[0]
    for path in sorted((out / "models").glob("*.onnx")):
        model = onnx.load(path)
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, 28, 28], path.name
        contract = json.loads({p.key: p.value for p in model.metadata_props}["onnxmtl.input"])
        assert contract["shape"] == ["batch", 3, 28, 28]
        steps = contract["preprocessing"]
        assert steps["mean"] == [0.485, 0.456, 0.406] and steps["scale"] == 1 / 255
    # the searched file on a test image as the folder gives it, against the trained model fed
    # as training fed it (resized to 32x32), to the export tolerance 1e-4 of the output scale
    supermodel = load_supermodel(out / "search" / "supermodel.pt").eval()
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(
            image[None], size=(32, 32), mode="bilinear", align_corners=False
        )
        expected = supermodel(resized, mode="fixed", policy=supermodel.policy)
    ort = session(str(out / "models" / "searched.onnx"), ["CPUExecutionProvider"])
    got = ort.run(["item", "ink", "shape"], {"image": image[None].numpy()})
    for name, value in zip(["item", "ink", "shape"], got):
        ref = expected[name].numpy()
        assert np.abs(value - ref).max() <= 1e-4 * np.abs(ref).max(), name
    checked = result.results["self_check"]
    assert set(checked) == {"searched", "all-shared"}  # the single-task stand-ins are untrained
    assert max(checked.values()) <= 1e-4
    assert "[batch, 3, 28, 28]" in (out / "report.md").read_text()
    assert {m["input_shape"][-1] for m in result.results["bench"]["models"].values()} == {28}
    # the deployment example, with onnxmtl unimportable, on an image file of the test split
    test = load_dataset(root, "test")
    name = next(n for n in test.names if int(n[4:7]) % 3 != 1)  # stored at 28x28
    blocker = tmp_path / "blocked" / "onnxmtl"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('onnxmtl is not installed here')")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "deploy_onnxruntime.py"),
         str(out / "models" / "searched.onnx"), str(root / "images" / name)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(blocker.parent)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    image, _ = test[test.names.index(name)]
    item, ink, shape = ort.run(["item", "ink", "shape"], {"image": image[None].numpy()})
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"item (classification): class {int(item.argmax())} (p=")
    assert lines[1] == f"ink (regression): {np.round(ink[0], 4).tolist()}"
    assert lines[2].startswith("shape (segmentation): 32x32 label map")  # the head's size


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_image_names_that_leave_the_folder_are_refused(tmp_path, how):
    root, _, _ = write_folder(tmp_path / "shop")
    marker = tmp_path / "outside.png"  # a file beside the folder, never to be read
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(marker)
    rows = (root / "labels.csv").read_text().splitlines()
    if how == "symlink":
        (root / "images" / "item000.png").unlink()
        (root / "images" / "item000.png").symlink_to(marker)
    else:
        name = "../../outside.png" if how == "dotdot" else str(marker)
        rows[1] = rows[1].replace("item000.png", name, 1)
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="leads outside this folder"):
        for split in ("train", "test"):
            load_dataset(root, split, strict=True)
    proc = run_cli("data", "check", str(root))
    assert proc.returncode != 0 and "outside" in proc.stdout + proc.stderr


def test_a_bom_csv_is_read_and_a_non_utf8_one_is_refused_in_one_line(tmp_path):
    root, _, classes = write_folder(tmp_path / "shop")
    text = (root / "labels.csv").read_text()
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # Excel's CSV UTF-8
    data = load_dataset(root, "train")
    assert data.targets["item"][0] == classes[int(data.names[0][4:7])]
    (root / "labels.csv").write_bytes(text.replace("image", "imag\xe9").encode("latin-1"))
    assert_clean_error(run_cli("data", "check", str(root)), "labels.csv", "not UTF-8")


def test_sixteen_bit_images_keep_their_values(tmp_path):
    root, images, _ = write_folder(tmp_path / "shop")
    name = "item000.png"
    wide = images[0].astype(np.uint16) * 257  # the same picture over 16 bits
    Image.fromarray(wide).save(root / "images" / name)  # mode I;16
    assert Image.open(root / "images" / name).mode.startswith("I;16")
    data = load_dataset(root, "train") if name in load_dataset(root, "train").names else None
    data = data or load_dataset(root, "test")
    index = data.names.index(name)
    assert np.array_equal(data.images[index][..., 0], images[0])  # not clipped to white


def test_an_image_over_the_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch):
    root, _, _ = write_folder(tmp_path / "shop")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 28x28 is over twice this
    with pytest.raises(DataError, match="more pixels than Pillow opens"):
        load_dataset(root, "train", strict=True)


def _rows(root):
    return list(csv.DictReader((root / "labels.csv").read_text().splitlines()))


def _write_rows(root, rows):
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "item", "ink"])
        writer.writeheader()
        writer.writerows(rows)


def _duplicate_row(root):
    rows = _rows(root)
    _write_rows(root, [*rows, {**rows[3], "item": "0"}])
    return f"labels.csv: rows 4 and {len(rows) + 1} both label image 'item003.png'"


def _class_of_item005(value: str, message: str):
    """A case that labels item005.png's class `value`, refused with `message`."""

    def break_it(root):
        rows = _rows(root)
        rows[5]["item"] = value
        _write_rows(root, rows)
        return message

    return break_it


_class_past_the_last = _class_of_item005(
    "10", "image 'item005.png', task 'item': cannot read '10' as a classification label"
)
_class_too_big_for_int64 = _class_of_item005(
    str(10**23), f"cannot read '{10**23}' as a classification label"
)
_fractional_class = _class_of_item005(
    "1.7", "cannot read '1.7' as a classification label (\\'1.7\\' is not a whole number)"
)


def _no_label_for_a_task(root):
    _write_rows(root, [{**row, "ink": ""} for row in _rows(root)])
    return "task 'ink' (regression) has no label in any sample of the split"


@pytest.mark.parametrize(
    "break_it",
    [
        _duplicate_row,
        _class_past_the_last,
        _class_too_big_for_int64,
        _fractional_class,
        _no_label_for_a_task,
    ],
)
def test_a_label_that_would_train_on_something_else_is_refused(tmp_path, break_it):
    root, _, _ = write_folder(tmp_path / "shop")
    message = break_it(root)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(root, "train").check(load_dataset(root, "train").tasks())


def test_multilabel_indices_must_be_classes_not_positions_from_the_end(tmp_path):
    root, _, _ = write_folder(tmp_path / "shop", "jsonl")
    (root / "tasks.yaml").write_text(
        "tasks:\n  - {name: item, kind: multilabel, num_outputs: 10}\n"
    )
    rows = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines()]
    good = [{"image": r["image"], "item": [r["item"], 0]} for r in rows]
    (root / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in good))
    data = load_dataset(root, "train")
    assert data.targets["item"][0].tolist() == [
        float(i in {0, good[int(data.names[0][4:7])]["item"][0]}) for i in range(10)
    ]
    for bad in ([-1], [1.7], [10]):
        wrong = [*good[:7], {"image": good[7]["image"], "item": bad}, *good[8:]]
        (root / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in wrong))
        with pytest.raises(DataError, match="image 'item007.png', task 'item': cannot read"):
            load_dataset(root, "train" if "item007.png" in data.names else "test")


def test_one_split_file_makes_the_other_split_the_rest_and_overlap_is_refused(tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(f"item{i:03d}.png\n" for i in range(50)))
    test = load_dataset(root, "test")
    assert test.names == [f"item{i:03d}.png" for i in range(50, COUNT)]  # nothing of train
    (root / "splits" / "train.txt").unlink()
    (root / "splits" / "test.txt").write_text("item000.png\nitem001.png\n")
    assert load_dataset(root, "train").names == [f"item{i:03d}.png" for i in range(2, COUNT)]
    (root / "splits" / "train.txt").write_text("item001.png\nitem002.png\n")
    with pytest.raises(DataError, match="train.txt and test.txt both list 1 image"):
        load_dataset(root, "train")


def test_an_image_that_is_a_fifo_is_refused_rather_than_waited_on(tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    (root / "images" / "item004.png").unlink()
    os.mkfifo(root / "images" / "item004.png")
    with pytest.raises(DataError, match=r"item004.png: not a regular file"):
        for split in ("train", "test"):
            load_dataset(root, split)


def test_resuming_after_the_labels_changed_is_refused(tiny_export, tmp_path):
    root, _, _ = write_folder(tmp_path / "shop")
    config = {"batch_size": 4, "warmup_steps": 1, "search_steps": 1, "post_train_steps": 1}
    config.update({"select_steps": 0, "select_batches": 1, "batchnorm_batches": 1})
    model = tiny_export("legacy17", fold_bn=True)
    out = tmp_path / "run"
    assert onnxmtl.search(model, root, out, config=config, progress=False).policy
    rows = _rows(root)
    rows[0]["item"] = str((int(rows[0]["item"]) + 1) % 10)
    _write_rows(root, rows)
    with pytest.raises(RunFolderError, match="other settings \\(the data's files\\)"):
        onnxmtl.search(model, root, out, config=config, resume=True, progress=False)
