"""A file whose constants hold its declared size's grid (patch unfolding targets, a bias
per pair of positions, a position table), loaded at another size: each constant is
rewritten for the wanted grid, and the graph on a batch equals the same module run at that
size, checked in onnxruntime; what cannot be rewritten is refused in one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnxmtl
from tests.helpers import assert_clean_error, ort_features, run_cli
from tests.test_fixed_batch import (
    PatchAttention,
    WindowAttention,
    export_batch_1,
    export_dynamic_batch,
    relative_diff,
)
from tests.test_token_features import export_legacy

TOLERANCE = 1e-5  # relative to the output's scale: the same float32 ops in both graphs


def outputs_at(proto: onnx.ModelProto, module: nn.Module, size: int) -> tuple[np.ndarray, ...]:
    """The file loaded at `size`, whole, run in onnxruntime on a batch of 3, and the module
    itself on the same images."""
    graph = onnxmtl.load(proto, features=None, input_shape=(1, 3, size, size))
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = module.eval()(x).numpy()
    return ort_features(graph, x)[0], want, graph.adaptations  # type: ignore[return-value]


@pytest.mark.parametrize("size", [8, 32], ids=["smaller", "larger"])
@pytest.mark.parametrize("export", [export_batch_1, export_dynamic_batch], ids=["b1", "dynamic"])
def test_patch_unfolding_follows_the_grid(export, size):
    """MobileViT's unfolding, exported at 16x16: its targets merge the channels with the
    patch rows ((b*c*h/2, 2, w/2, 2)) and split the patches; at another size every one is
    rewritten and the graph computes what the module computes there."""
    torch.manual_seed(0)
    module = PatchAttention()
    got, want, adapted = outputs_at(export(module, 16), module, size)
    assert any("Reshape" in line and "->" in line for line in adapted), adapted
    assert relative_diff(got, want) <= TOLERANCE


def test_windows_of_a_fixed_size_follow_the_grid():
    """Window attention over 2x2 windows, exported at 8x8 at a batch of 1: at 12x12 there
    are 36 windows instead of 16, each with the same bias per pair of its 4 positions."""
    torch.manual_seed(0)
    module = WindowAttention()
    got, want, _ = outputs_at(export_batch_1(module, 8), module, 12)
    assert relative_diff(got, want) <= TOLERANCE


class RelativeBias(nn.Module):
    """LeViT's and EfficientFormer's attention: tokens of a strided convolution's grid, a
    learned bias per head and per offset between two positions, read from a table indexed
    by |dy| * 8 + |dx| (the declared 8x8 grid's width); the index is computed in `forward`
    from the grid the module meets, so the module defines the bias at any smaller grid."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 16, 2, 2)
        self.qkv = nn.Linear(16, 48)
        self.biases = nn.Parameter(torch.randn(2, 64))
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.patches(x)
        b, c, h, w = y.shape
        t = y.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(b, h * w, 2, 24).permute(0, 2, 1, 3).split(8, dim=3)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        index = (ys[:, None] - ys[None]).abs() * 8 + (xs[:, None] - xs[None]).abs()
        attn = torch.softmax(q @ k.transpose(-2, -1) * 0.35 + self.biases[:, index], dim=-1)
        t = (attn @ v).transpose(1, 2).reshape(b, h * w, 16)
        return self.proj(t).transpose(1, 2).reshape(b, c, h, w)


def test_a_bias_per_pair_of_positions_is_cropped_exactly():
    """Exported at 16x16 at a batch of 1, the bias over the 8x8 grid's 64x64 pairs is one
    folded constant; at 8x8 it is cropped to the 4x4 grid's 16x16 pairs, which is the
    module's bias there: the graph equals the module."""
    torch.manual_seed(0)
    module = RelativeBias()
    got, want, adapted = outputs_at(export_batch_1(module, 16), module, 8)
    assert any("cropped [2, 64, 64] -> [2, 16, 16]" in line for line in adapted), adapted
    assert relative_diff(got, want) <= TOLERANCE


class ResampledTable(nn.Module):
    """A ViT's learned position table, one row per token of the declared 4x4 grid, which
    the module resamples bicubically at another grid (as timm does for a new image size)."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 24, 4, 4)
        self.position = nn.Parameter(torch.randn(1, 16, 24))
        self.norm = nn.LayerNorm(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.patches(x)
        b, c, h, w = y.shape
        position = self.position
        if (h, w) != (4, 4):
            grid = position.reshape(1, 4, 4, c).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            position = grid.permute(0, 2, 3, 1).reshape(1, h * w, c)
        t = self.norm(y.flatten(2).transpose(1, 2) + position)
        return t.transpose(1, 2).reshape(b, c, h, w)


class ResampledMap(nn.Module):
    """A learned bias per position of the declared 8x8 map, resampled bicubically at
    another size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.position = nn.Parameter(torch.randn(1, 8, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        position = self.position
        if y.shape[2:] != position.shape[2:]:
            position = F.interpolate(
                position, size=y.shape[2:], mode="bicubic", align_corners=False
            )
        return torch.relu(y + position)


@pytest.mark.parametrize(
    ("make", "declared", "size", "shapes"),
    [
        (ResampledTable, 16, 32, "resampled [1, 16, 24] -> [1, 64, 24]"),
        (ResampledTable, 16, 8, "resampled [1, 16, 24] -> [1, 4, 24]"),
        (ResampledMap, 8, 16, "resampled [1, 8, 8, 8] -> [1, 8, 16, 16]"),
    ],
    ids=["tokens-larger", "tokens-smaller", "map-larger"],
)
def test_a_position_table_is_resampled(make, declared, size, shapes):
    """A position table sized for the declared grid, loaded at another size, is resampled
    bicubically to the wanted grid: the graph equals the module that resamples it so."""
    torch.manual_seed(0)
    module = make()
    got, want, adapted = outputs_at(export_legacy(module, declared), module, size)
    assert any(shapes in line for line in adapted), adapted
    assert relative_diff(got, want) <= TOLERANCE


def test_a_grid_no_rewrite_can_hold_is_refused_in_one_line(tmp_path):
    """Patches of 2x2 cannot tile a 9x9 map: no target holds it, and verify says in one
    line that the file loads at its declared size, not at 9x9."""
    torch.manual_seed(0)
    path = tmp_path / "patches.onnx"
    onnx.save(export_batch_1(PatchAttention(), 8), path)
    proc = run_cli("verify", str(path), "--input-shape", "1,3,9,9")
    assert_clean_error(proc, "loads at its declared 8x8 but not at 9x9", "load it at 8x8")
