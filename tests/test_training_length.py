"""benchmarks/training_length.py: a point of a curve is the model a run of that length
trains, and the record's delta-m and epochs follow their definitions."""

from __future__ import annotations

import pytest
import torch

from onnxmtl.data.torch_dataset import torch_splits
from onnxmtl.pipeline.stages import train_baseline
from onnxmtl.runtime import cpu_threads
from onnxmtl.tasks import Task
from onnxmtl.training import SearchConfig
from tests.conftest import load_script


def script():
    return load_script("benchmarks/training_length.py")


class Shapes(torch.utils.data.Dataset):
    """Images whose class is which third of the image is bright, with noise; `where` is the
    bright third's centre."""

    def __init__(self, count: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (count,), generator=g)
        self.images = torch.randn(count, 3, 32, 32, generator=g) * 0.3
        for image, label in zip(self.images, self.labels):
            image[:, :, int(label) * 10 : int(label) * 10 + 10] += 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        where = torch.tensor([float(self.labels[i]) - 1.0, 0.0])
        return self.images[i], {"c": self.labels[i], "where": where}


def test_a_point_of_the_curve_is_the_run_of_that_length(tiny_export, tmp_path):
    tasks = [Task("c", "classification", 3), Task("where", "regression", 2)]
    pair = (Shapes(64, 0), Shapes(16, 1))
    config = SearchConfig().with_options(
        batch_size=8, post_train_lr=0.01, batchnorm_batches=2, checkpoint_every=0, threads=1
    )
    model = tiny_export("legacy17")
    train, _ = torch_splits(pair, tasks)
    with cpu_threads(1):  # as train_baseline runs at threads 1
        curve = script().curve(
            model, train, tasks, "all-shared", config, [3, 6], tmp_path / "curve"
        )
    assert not (tmp_path / "curve" / "at3").exists()  # the copy finished at 3 steps is gone
    for steps in (3, 6):
        run = config.with_options(post_train_steps=steps)
        result = train_baseline(
            model, pair, tmp_path / f"run{steps}", "all-shared", tasks, run, progress=False
        )
        assert curve[steps] == result[f"run{steps}"].metrics["val"]
    assert curve[3]["where"] != curve[6]["where"]  # the two lengths trained different models


def test_rows_give_epochs_and_delta_m_against_single_task_models_as_long():
    config = SearchConfig().with_options(batch_size=32, data={"count": 8000}, val_fraction=0.1)
    single = {150: {"a": {"accuracy": 0.5}, "b": {"rmse": 2.0}}}
    shared = {150: {"a": {"accuracy": 0.6}, "b": {"rmse": 2.5}}}
    row = script().summarize("set", 7, {"single-task": single, "all-shared": shared}, config, 8000)
    # 150 * 32 images over 7,200; delta-m: (+20% accuracy, -25% RMSE) / 2 = -2.5%
    assert row == [
        {
            "data": "set",
            "seed": 7,
            "steps": 150,
            "epochs": pytest.approx(0.67),
            "single-task a accuracy": 0.5,
            "single-task b rmse": 2.0,
            "all-shared delta-m %": -2.5,
        }
    ]
