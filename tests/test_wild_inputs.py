"""Backbones as they come from the wild: channels-last image inputs and global pooling written
as a fixed window. Real PyTorch exports; the lowered graph is compared with onnxruntime running
the original file (or, where the original cannot run, with the PyTorch model it came from)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import onnxmtl
from onnxmtl.compiler import compile
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module
from onnxmtl.runtime import session
from tests.helpers import assert_close, assert_random_policy_derives_and_exports, run_cli, tasks


class ChannelsLast(nn.Module):
    """Takes (N, H, W, 3) images, optionally rescales them there, then permutes."""

    def __init__(self, rescale: bool) -> None:
        super().__init__()
        self.rescale = rescale
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rescale:
            x = x * 2 - 1
        return self.body(x.permute(0, 3, 1, 2)).mean((2, 3))


class FixedPool(nn.Module):
    """A classifier whose global pooling is a fixed 4x4 window (its map at 32x32)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.ReLU(),
        )
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))

    def global_forward(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier means at any size: global average pooling."""
        return self.fc(self.body(x).mean((2, 3)))


def exported(module: nn.Module, example: torch.Tensor, path) -> str:
    torch.manual_seed(0)
    for p in module.parameters():  # away from the default init, so a wrong op shows
        p.data.uniform_(-0.5, 0.5)
    torch.onnx.export(
        module.eval(),
        example,
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
        opset_version=17,
    )
    return str(path)


def images(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


@pytest.mark.parametrize("rescale", [False, True], ids=["transpose-first", "rescale-first"])
def test_channels_last_input_takes_nchw(tmp_path, rescale):
    path = exported(ChannelsLast(rescale), torch.zeros(1, 32, 32, 3), tmp_path / "nhwc.onnx")
    nhwc = images(2, 32, 32, 3)
    (want,) = session(path, ["CPUExecutionProvider"]).run(None, {"x": nhwc})

    graph = onnxmtl.load(path, features=None)
    assert graph.input_name == "x" and graph.input_shape == ("N", 3, 32, 32)
    assert any("channels-last" in line for line in graph.adaptations)
    (got,) = run_module(lower(graph), np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))
    assert_close(torch.as_tensor(got), want, "NCHW through the adapted graph")
    transposes = [n for n in graph.nodes if n.op_type == "Transpose"]
    assert len(transposes) == (2 if rescale else 0)  # folded where the graph transposes first


def test_channels_first_input_is_left_alone(tmp_path):
    path = exported(FixedPool(), torch.zeros(1, 3, 32, 32), tmp_path / "nchw.onnx")
    graph = onnxmtl.load(path, input_shape=(1, 3, 32, 32))
    assert not any("channels-last" in line for line in graph.adaptations)
    assert graph.input_shape == ("N", 3, 32, 32)


def test_fixed_window_pool_becomes_global(tmp_path):
    model = FixedPool()
    path = exported(model, torch.zeros(1, 3, 32, 32), tmp_path / "pool.onnx")
    # At the declared size the adapted graph still computes what the file computes.
    x = images(2, 3, 32, 32)
    (want,) = session(path, ["CPUExecutionProvider"]).run(None, {"x": x})
    graph = onnxmtl.load(path, features=None)
    (got,) = run_module(lower(graph), x)
    assert_close(torch.as_tensor(got), want, "declared size")
    # At another size, where the file's 4x4 window no longer covers the map, the classifier
    # pools globally, as the PyTorch model would with global pooling.
    big = images(2, 3, 64, 64)
    graph = onnxmtl.load(path, features=None, input_shape=(1, 3, 64, 64))
    assert any("GlobalAveragePool" in line for line in graph.adaptations)
    (got,) = run_module(lower(graph), big)
    with torch.no_grad():
        want = model.global_forward(torch.from_numpy(big))
    assert_close(torch.as_tensor(got), want, "64x64")
    # features='auto' cuts in front of the pooling at any size.
    graph = onnxmtl.load(path, input_shape=(1, 3, 48, 48))
    assert graph.feature_shapes == [("N", 16, 6, 6)]


def test_pool_smaller_than_its_map_is_kept(tmp_path):
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.avg_pool2d(self.conv(x), 2)

    path = exported(Local(), torch.zeros(1, 3, 8, 8), tmp_path / "local.onnx")
    graph = onnxmtl.load(path, features=None, input_shape=(1, 3, 16, 16))
    assert graph.adaptations == []
    assert [n.op_type for n in graph.nodes].count("AveragePool") == 1


def test_adapted_backbone_goes_through_the_back_end(tmp_path):
    """A channels-last file with a fixed-window pool: compile, derive a random policy and
    export; the export takes NCHW and matches PyTorch."""

    class Both(FixedPool):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 3, 1, 2))

    path = exported(Both(), torch.zeros(1, 32, 32, 3), tmp_path / "both.onnx")
    graph = onnxmtl.load(path, input_shape=(1, 3, 48, 48))
    assert len(graph.adaptations) == 2
    model = compile(graph, tasks()).eval()
    x = torch.from_numpy(images(2, 3, 48, 48))
    assert_random_policy_derives_and_exports(model, x, tmp_path)


def test_inspect_says_what_load_adapted(tmp_path):
    path = exported(ChannelsLast(False), torch.zeros(1, 32, 32, 3), tmp_path / "nhwc.onnx")
    proc = run_cli("inspect", path)
    assert proc.returncode == 0, proc.stderr
    adapted = [line for line in proc.stdout.splitlines() if line.startswith("adapted")]
    assert len(adapted) == 1 and "channels-last ('N', 32, 32, 3)" in adapted[0]


def test_bench_feeds_a_file_the_input_it_declares(tmp_path):
    """A channels-last backbone is benchmarked as the file is: (N, H, W, 3) images, although
    load turned the graph it builds on to NCHW."""
    path = exported(ChannelsLast(False), torch.zeros(1, 32, 32, 3), tmp_path / "nhwc.onnx")
    assert onnxmtl.load(path).input_shape[1] == 3
    result = onnxmtl.bench({"nhwc": path}, batch_sizes=[2], repeats=2, warmup=1, memory=False)
    assert result.models["nhwc"].input_shape == ["N", 32, 32, 3]
    assert [r.batch for r in result.latency] == [2]
