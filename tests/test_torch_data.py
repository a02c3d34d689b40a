"""A user's own torch Datasets and PyTorch modules through the Python API: search, baselines
and the whole run take a (train, test) pair with a tasks list and a module as the backbone;
a dataset of the wrong shape or a module that cannot be exported fails before any training
with one line naming it."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import onnxmtl
from onnxmtl.errors import ConfigError, DataError, ModelFileError
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module
from onnxmtl.pipeline.stages import evaluate_run
from onnxmtl.tasks import Task
from tests.conftest import ROOT

TINY = {"batch_size": 4, "warmup_steps": 2, "search_steps": 3, "post_train_steps": 2}
TASKS = [Task("side", "classification", 2), Task("level", "regression", 1)]


class Squares(Dataset):
    """Noise with a bright square on the left or the right: which side (a class) and how
    bright (a value)."""

    def __init__(self, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.side = rng.integers(0, 2, count)
        self.level = rng.uniform(0.5, 1.0, count).astype(np.float32)
        self.images = rng.uniform(0, 0.2, (count, 3, 32, 32)).astype(np.float32)
        for i in range(count):
            column = 4 + 16 * self.side[i]
            self.images[i, :, 12:20, column : column + 8] += self.level[i]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.images[index]), {
            "side": int(self.side[index]),
            "level": np.array([self.level[index]]),
        }


@pytest.fixture
def pair() -> tuple[Squares, Squares]:
    return Squares(40, seed=0), Squares(12, seed=1)


def test_search_and_baselines_take_torch_datasets(tiny_export, tmp_path, pair):
    model = tiny_export("legacy17")
    result = onnxmtl.search(model, pair, tmp_path / "s", tasks=TASKS, config=TINY, progress=False)
    assert set(result.metrics["test"]) == {"side", "level"}
    assert 0 <= result.metrics["test"]["side"]["accuracy"] <= 1
    info = json.loads((tmp_path / "s" / "run.json").read_text())
    assert info["data"] == "python:Squares[40]/Squares[12]"
    assert [t["name"] for t in info["tasks"]] == ["side", "level"]
    single = onnxmtl.train_baseline(
        model, pair, tmp_path / "b", "single-task", tasks=TASKS, config=TINY, progress=False
    )
    assert sorted(single) == ["level", "side"]
    with pytest.raises(ConfigError, match="trained on Python datasets"):
        evaluate_run(tmp_path / "s")


def test_run_takes_torch_datasets(tiny_export, tmp_path, pair, monkeypatch):
    monkeypatch.setenv("ONNXMTL_CACHE", str(tmp_path / "cache"))
    result = onnxmtl.run(
        tiny_export("legacy17"),
        pair,
        tmp_path / "run",
        tasks=TASKS,
        config=TINY,
        bench_repeats=2,
        progress=False,
    )
    assert set(result.results["methods"]) >= {"searched", "all-shared", "single-task"}
    exported = onnxmtl.load(tmp_path / "run" / "models" / "searched.onnx", features=None)
    assert exported.features == ["side", "level"]


class NoLevel(Squares):
    def __getitem__(self, index: int):
        image, targets = super().__getitem__(index)
        del targets["level"]
        return image, targets


class Flat(Squares):
    def __getitem__(self, index: int):
        image, targets = super().__getitem__(index)
        return image.flatten(), targets


@pytest.mark.parametrize(
    ("train", "tasks", "message"),
    [
        (Squares(8, 0), None, "does not name its tasks; give tasks="),
        (NoLevel(8, 0), TASKS, "NoLevel (train): item 0 has no target for task(s) level"),
        (Flat(8, 0), TASKS, "Flat (train): item 0 has an image of shape (3072,)"),
    ],
    ids=["no-tasks", "missing-target", "flat-image"],
)
def test_a_dataset_of_the_wrong_shape_fails_before_training(
    tiny_export, tmp_path, train, tasks, message
):
    with pytest.raises(DataError, match=re.escape(message)):
        onnxmtl.search(
            tiny_export("legacy17"),
            (train, Squares(4, 1)),
            tmp_path / "s",
            tasks=tasks,
            config=TINY,
            progress=False,
        )
    assert not (tmp_path / "s" / "checkpoint.pt").exists()


def test_datasets_that_are_not_a_pair_are_a_data_error(tmp_path, pair):
    """Three datasets (or any sequence but a (train, test) pair) is refused with the message
    naming what to give, not a TypeError from reading them as a path."""
    with pytest.raises(DataError, match=re.escape("a (train, test) pair of Datasets")):
        onnxmtl.search(
            tmp_path / "unused.onnx", [*pair, pair[0]], tmp_path / "s", tasks=TASKS, config=TINY
        )


def test_docs_torch_data_example_runs(tiny_export, tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "data.md").read_text()
    match = re.search(r"<!-- torch-data-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/data.md lost its torch Dataset example"
    shutil.copy(tiny_export("legacy17"), tmp_path / "backbone.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "docs/data.md", "exec"), {})
    info = json.loads((tmp_path / "runs" / "shop" / "run.json").read_text())
    assert info["data"] == "python:Shop[40]/Shop[12]"
    assert "'colour'" in capsys.readouterr().out


class Backbone(torch.nn.Module):
    """A user's own PyTorch backbone: conv, BatchNorm, ReLU, pooling, a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 2, 1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, 2, 1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
        )
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


def test_load_takes_a_pytorch_module_with_its_batchnorm():
    torch.manual_seed(0)
    module = Backbone().eval()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    graph = onnxmtl.load(module, features=None, example_input=torch.zeros(1, 3, 32, 32))
    assert graph.normalization == "present" and graph.input_shape == ("batch", 3, 32, 32)
    assert module.training is False
    x = torch.rand(3, 3, 32, 32)
    (got,) = run_module(lower(graph), x.numpy())
    with torch.no_grad():
        want = module(x)
    assert np.abs(got - want.numpy()).max() <= 1e-4 * float(want.abs().max())
    # features='auto' cuts in front of the pooling, as for any file.
    auto = onnxmtl.load(module, example_input=torch.zeros(1, 3, 32, 32))
    assert auto.feature_shapes == [("batch", 16, 8, 8)]
    # the images given second, where `features` stands, are the example input
    assert onnxmtl.load(module, torch.zeros(1, 3, 32, 32)).feature_shapes == auto.feature_shapes


class Spectral(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).abs()


@pytest.mark.parametrize(
    ("module", "example", "message"),
    [
        (Backbone(), None, "Backbone: a PyTorch module needs example_input"),
        (Backbone(), torch.zeros(3, 32, 32), "example_input must be an (N, C, H, W) image"),
        (
            Spectral(),
            torch.zeros(1, 3, 8, 8),
            "Spectral: the PyTorch ONNX exporter failed (it cannot export aten::fft_fft2)",
        ),
    ],
    ids=["no-example", "unbatched-example", "unexportable-op"],
)
def test_a_module_that_cannot_be_exported_is_one_line(module, example, message):
    with pytest.raises(ModelFileError, match=re.escape(message)) as info:
        onnxmtl.load(module, example_input=example)
    assert "\n" not in str(info.value)


def test_run_takes_a_pytorch_module(tmp_path, pair, monkeypatch):
    monkeypatch.setenv("ONNXMTL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = onnxmtl.run(
        Backbone(),
        pair,
        out,
        tasks=TASKS,
        config=TINY,
        baselines=("all-shared",),
        bench_repeats=2,
        progress=False,
        example_input=torch.zeros(1, 3, 32, 32),
    )
    assert (out / "backbone.onnx").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == str(out / "backbone.onnx") and info["model_sha256"]
    assert set(result.results["methods"]) >= {"searched", "all-shared"}
    with pytest.raises(ConfigError, match="needs example_input"):
        onnxmtl.search(Backbone(), pair, tmp_path / "s", tasks=TASKS, config=TINY)
