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
from tests.conftest import converters
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


def test_channels_as_many_as_the_patches_are_told_apart():
    """MobileViT-XXS's unfolding at 16x16 with 64 channels: `[1, 64, 64, 4]` holds the
    channels and the 8x8 patches, both 64. The patches hold the whole patch columns that
    change, so they follow the grid; folded back, the map's sides follow the maps'."""
    torch.manual_seed(0)
    module = PatchAttention(channels=64)
    got, want, adapted = outputs_at(export_batch_1(module, 16), module, 8)
    assert any("[1, 64, 64, 4] -> [1, 64, 16, 4]" in line for line in adapted), adapted
    assert any("[1, 64, 16, 16] -> [1, 64, 8, 8]" in line for line in adapted), adapted
    assert relative_diff(got, want) <= TOLERANCE


def test_windows_of_a_fixed_size_follow_the_grid():
    """Window attention over 2x2 windows, exported at 8x8 at a batch of 1: at 12x12 there
    are 36 windows instead of 16, each with the same bias per pair of its 4 positions."""
    torch.manual_seed(0)
    module = WindowAttention()
    got, want, _ = outputs_at(export_batch_1(module, 8), module, 12)
    assert relative_diff(got, want) <= TOLERANCE


class PaddedWindows(nn.Module):
    """TinyViT's window attention: (B, H, W, C) cut into windows of `window` x `window`,
    padded with zeros to whole windows where they do not tile, attention within each window
    with a bias per pair of its positions, the windows put back, the padding cropped, a
    residual added. Traced where the windows tile, the file holds no Pad."""

    def __init__(self, window: int = 3) -> None:
        super().__init__()
        self.window = window
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.qkv = nn.Linear(8, 24)
        self.bias = nn.Parameter(torch.randn(2, window * window, window * window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)
        b, h, w, c = y.shape
        s, n = self.window, self.window * self.window
        pad_b, pad_r = (s - h % s) % s, (s - w % s) % s
        t = F.pad(y, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else y
        ph, pw = h + pad_b, w + pad_r
        t = t.view(b, ph // s, s, pw // s, s, c).transpose(2, 3).reshape(-1, n, c)
        q, k, v = self.qkv(t).view(-1, n, 2, 12).split([4, 4, 4], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) + self.bias, dim=-1)
        t = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        t = t.view(b, ph // s, pw // s, s, s, c).transpose(2, 3).reshape(b, ph, pw, c)
        t = t[:, :h, :w] if pad_b or pad_r else t
        return (y + t).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("window", "declared", "size"),
    [(3, 18, 16), (3, 18, 25), (7, 28, 32)],
    ids=["smaller", "larger", "side-not-a-count"],
)
def test_windows_that_do_not_tile_are_padded_then_cropped(window, declared, size):
    """Exported where the windows tile the map, the file holds no Pad; at a size where they
    do not, the map is padded to whole windows before they are cut and cropped back after
    they are put back, as the module does. The map's side 28 is no token count: read as a
    4x7 grid, its windows would have grown to 8x8."""
    torch.manual_seed(0)
    module = PaddedWindows(window)
    got, want, adapted = outputs_at(export_batch_1(module, declared), module, size)
    padded = -(-size // window) * window
    assert any(f"its data padded to [1, {padded}, {padded}, 8]" in line for line in adapted)
    assert any(f"cropped back to [1, {size}, {size}, 8]" in line for line in adapted), adapted
    assert relative_diff(got, want) <= TOLERANCE


class RelativeBias(nn.Module):
    """LeViT's and EfficientFormer's attention: tokens of a strided convolution's grid, a
    learned bias per head and per offset between two positions, read from a table indexed
    by |dy| * width + |dx| (the declared grid's width); the index is computed in `forward`
    from the grid the module meets, so the module defines the bias at any smaller grid.
    With `stride` 2, the queries are every other position (LeViT's subsampling attention),
    the bias is per query of the smaller grid and key of the full one."""

    def __init__(self, patch: int = 2, width: int = 8, stride: int = 1) -> None:
        super().__init__()
        self.width, self.stride = width, stride
        self.patches = nn.Conv2d(3, 16, patch, patch)
        self.q = nn.Linear(16, 16)
        self.kv = nn.Linear(16, 32)
        self.biases = nn.Parameter(torch.randn(2, width * width))
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.patches(x)
        b, c, h, w = y.shape
        s = self.stride
        queries = y[:, :, ::s, ::s]
        hq, wq = queries.shape[2:]
        q = self.q(queries.flatten(2).transpose(1, 2)).reshape(b, hq * wq, 2, 8).transpose(1, 2)
        kv = self.kv(y.flatten(2).transpose(1, 2)).reshape(b, h * w, 2, 16).transpose(1, 2)
        k, v = kv.split(8, dim=3)
        bias = self.biases[:, self.index(int(h), int(w))]  # python ints: folded on export
        attn = torch.softmax(q @ k.transpose(-2, -1) * 0.35 + bias, dim=-1)
        t = (attn @ v).transpose(1, 2).reshape(b, hq * wq, 16)
        return self.proj(t).transpose(1, 2).reshape(b, c, hq, wq)

    def index(self, h: int, w: int) -> torch.Tensor:
        """Each query's and key's entry of the bias table on an h x w grid."""
        keys = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        queries = torch.meshgrid(
            torch.arange(0, h, self.stride), torch.arange(0, w, self.stride), indexing="ij"
        )
        (ys, xs), (yq, xq) = ([g.flatten() for g in grid] for grid in (keys, queries))
        return (yq[:, None] - ys[None]).abs() * self.width + (xq[:, None] - xs[None]).abs()


@pytest.mark.parametrize(
    ("make", "declared", "size", "shapes"),
    [
        (RelativeBias, 16, 8, "cropped [2, 64, 64] -> [2, 16, 16]"),
        (lambda: RelativeBias(8, 7, 2), 56, 32, "cropped [2, 16, 49] -> [2, 4, 16]"),
    ],
    ids=["pairs", "subsampled-queries"],
)
def test_a_bias_per_pair_of_positions_is_cropped_exactly(make, declared, size, shapes):
    """Exported at a batch of 1, the bias over the declared grid's pairs is one folded
    constant; at a smaller size it is cropped to the smaller grid's pairs, which is the
    module's bias there: the graph equals the module. Subsampled queries are every other
    position of an odd 7x7 grid: 4x4 of them at 56x56, 2x2 at 32x32, one stride rounded up
    at both."""
    torch.manual_seed(0)
    module = make()
    got, want, adapted = outputs_at(export_batch_1(module, declared), module, size)
    assert any(shapes in line for line in adapted), adapted
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


@pytest.mark.parametrize("export", [export_batch_1, export_dynamic_batch], ids=["b1", "dynamic"])
def test_patches_that_do_not_tile_are_resized_then_resized_back(export):
    """MobileViT's 2x2 patches, exported at 8x8, loaded at 9x9 (channels as many as the
    sides): the map is resized to 10x10 before it is cut, as timm resizes it, and the map
    put back together after the attention resized back to 9x9 (not the patches cut from
    it, whose shape is the map's too); the graph computes what the module computes."""
    torch.manual_seed(0)
    module = PatchAttention()
    got, want, adapted = outputs_at(export(module, 8), module, 9)
    assert any("its data resized to [1, 8, 10, 10]" in line for line in adapted), adapted
    back = [line for line in adapted if "resized back" in line]
    assert len(back) == 1 and "8, 8, 8] -> [" in back[0] and "8, 10, 10]," in back[0], adapted
    assert relative_diff(got, want) <= TOLERANCE


def test_a_grid_no_rewrite_can_hold_is_refused_in_one_line(tmp_path):
    """Windows of 2x2 (a patch's size, which timm does not pad) cannot tile a 9x9 map: no
    target holds it, and verify says in one line that the file loads at its declared size,
    not at 9x9."""
    torch.manual_seed(0)
    path = tmp_path / "windows.onnx"
    onnx.save(export_batch_1(WindowAttention(), 8), path)
    proc = run_cli("verify", str(path), "--input-shape", "1,3,9,9")
    assert_clean_error(proc, "loads at its declared 8x8 but not at 9x9", "load it at 8x8")


@pytest.mark.parametrize("exporter", [converters.STATIC_BATCH, "legacy17"])
def test_mobilevit_equals_timms_own_where_patches_do_not_tile(corpus, exporter):
    """timm's MobileViT-XXS exported at 128x128, loaded at 96x96: its last stage's 3x3 map is
    not tiled by 2x2 patches, and the features in onnxruntime equal timm's own model run at
    96x96, which resizes that map to 4x4 and back. With a dynamic batch, the legacy exporter
    computes batch*channels*patch rows with the rows a constant: that factor follows the
    grid."""
    pytest.importorskip("timm")
    name = "timm_mobilevit_xxs"
    path = corpus(name, exporter)
    torch.manual_seed(0)  # as converters.export_backbone seeds it: the file's weights
    model = converters.BACKBONES[name].build().eval()
    graph = onnxmtl.load(path, input_shape=(2, 3, 96, 96))
    assert any("resized back to [1, 96, 3, 3]" in line for line in graph.adaptations)
    factor = "a factor of its computed entry 8 -> 6"
    assert (exporter == "legacy17") == any(factor in line for line in graph.adaptations)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want = model.forward_features(x).numpy()
    assert relative_diff(ort_features(graph, x)[0], want) <= TOLERANCE


@pytest.mark.parametrize("size", [128, 256], ids=["smaller", "larger"])
def test_tinyvit_windows_equal_timms_own_at_another_size(corpus, size):
    """timm's TinyViT exported at 224x224 and a batch of 1 (7x7 windows tile its 28x28
    stage-1 map, so the file has no Pad), loaded at 128x128 or 256x256: its stage 1 in
    onnxruntime equals timm's own model run at that size, which pads the 16x16 or 32x32
    map to whole windows."""
    pytest.importorskip("timm")
    name = "timm_tiny_vit_5m_224"
    path = corpus(name, converters.STATIC_BATCH)
    torch.manual_seed(0)  # as converters.export_backbone seeds it: the file's weights
    model = converters.BACKBONES[name].build().eval()
    stage1 = "/stages/stages.1/Transpose_1_output_0"
    graph = onnxmtl.load(path, features=[stage1], input_shape=(2, 3, size, size))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = model.stages[1](model.stages[0](model.patch_embed(x))).numpy()
    assert relative_diff(ort_features(graph, x)[0], want) <= TOLERANCE
