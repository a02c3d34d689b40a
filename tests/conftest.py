"""Shared fixtures: small backbones exported by the real torch exporters, the corpus, and a
small scenes dataset."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from onnxmtl.data import Scenes

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = ROOT / ".cache" / "corpus"


def load_script(relative: str) -> ModuleType:
    """A script of the repository that is not a package module (benchmarks/, tools/), by its
    path under the root, loaded as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT))

from converters import export_backbones as converters  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker gets its share of the cores for torch, in its own process
    and in the CLI and torchrun processes it starts: workers whose thread pools contend for the
    same cores slow torch code made of small operators many times over."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        share = max(1, (cores or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


class TinyNet(nn.Module):
    """A small classifier with the structures real backbones have: stem, residual, depthwise,
    concat, upsample, squeeze-excite, and a pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8))
        self.dw = nn.Sequential(
            nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.Hardswish()
        )
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16))
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(16, 4, 1),
            nn.ReLU(),
            nn.Conv2d(4, 16, 1),
            nn.Sigmoid(),
        )
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16), nn.GELU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        y = torch.cat([x, self.dw(x)], dim=1)
        z = self.down(y)
        z = z * self.se(z)
        f = self.fuse(torch.cat([x, self.up(z)], dim=1))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1))


EXPORTERS = ("dynamo", "legacy13", "legacy17")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_export(tiny_dir):
    """Return a function exporting TinyNet (seed 0) with an exporter, cached per session."""

    def make(exporter: str, fold_bn: bool = False) -> Path:
        path = tiny_dir / f"tiny.{exporter}{'.folded' if fold_bn else ''}.onnx"
        if not path.exists():
            torch.manual_seed(0)
            model = TinyNet()
            with torch.no_grad():  # non-trivial BN statistics
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
            converters.export(model, path, exporter, 32, fold_bn)
        return path

    return make


@pytest.fixture(scope="session")
def corpus():
    """Return a function giving the path of a corpus backbone, exporting it on first use."""

    def get(name: str, exporter: str) -> Path:
        return converters.export_backbone(name, exporter, CORPUS_DIR)

    return get


@pytest.fixture
def scenes(tmp_path_factory):
    cache = tmp_path_factory.mktemp("scenes")
    return Scenes("train", count=48, size=32, cache_dir=cache), Scenes(
        "test", count=8, size=32, cache_dir=cache
    )
