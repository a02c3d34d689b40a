"""Backbones that end on a sequence of tokens (LeViT, EfficientFormer's last stage, ViTs):
features='auto' takes the last sequence, not the stem's map or an attention tensor, and lays
it out as the (N, C, h, w) map a head reads, checked against onnxruntime on the file; and an
export whose batch cannot stay dynamic is said to be so, and `run` exports it at a batch of 1."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxmtl
from onnxmtl.compiler import SHARED, compile
from onnxmtl.derived import derive
from onnxmtl.errors import DynamicBatchError
from onnxmtl.exporter import export
from onnxmtl.pipeline.exports import export_models, input_contract
from onnxmtl.run_folder import PipelineFolder
from onnxmtl.runtime import session
from tests.helpers import ort_features, tasks
from tests.test_fixed_batch import export_batch_1

TOLERANCE = 1e-5  # relative to the features' scale: the same float32 ops in both graphs


def export_legacy(module: nn.Module, size: int) -> onnx.ModelProto:
    """`module` through torch's legacy exporter with a dynamic batch, as timm's files are."""
    buffer = io.BytesIO()
    x = torch.randn(2, 3, size, size)
    axes = {"x": {0: "N"}, "y": {0: "N"}}
    torch.onnx.export(
        module.eval(), x, buffer, dynamo=False, input_names=["x"], output_names=["y"],
        dynamic_axes=axes, opset_version=17,
    )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


class Subsampled(nn.Module):
    """LeViT's shape: a convolution stem, its map flattened to channels-last tokens, token
    MLPs with a residual, a subsampling of the token grid (as LeViT's attention downsample
    reads its queries), a LayerNorm and the classifier's mean over tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 24, 3, 2, 1))
        self.mlp = nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 24))
        self.widen = nn.Linear(24, 32)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.mlp(x)
        x = x.reshape(b, h, w, c)[:, ::2, ::2].reshape(b, -1, c)
        x = self.norm(self.widen(x))
        return self.head(x.mean(1))


class ClassToken(nn.Module):
    """A ViT's shape: patches embedded by a strided convolution, a class token in front,
    a token MLP, a LayerNorm, and the class token read by the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 24, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 24))
        self.mlp = nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 24))
        self.norm = nn.LayerNorm(24)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(x + self.mlp(x))
        return self.head(x[:, 0])


class FlattenedMean(nn.Module):
    """A CNN whose classifier flattens the map as it is, (N, C, H*W), and averages over the
    positions: the same rank as tokens, but not tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 4, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(2).mean(2))


def tokens_of(proto: onnx.ModelProto, name: str, x: np.ndarray) -> np.ndarray:
    """The file's own value `name` on onnxruntime, made an output of the file; image by
    image, where the file fixes its batch at 1."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = session(proto, ["CPUExecutionProvider"])
    image = sess.get_inputs()[0].name
    return np.concatenate([sess.run([name], {image: x[i : i + 1]})[0] for i in range(len(x))])


def as_map(tokens: np.ndarray, leading: int, h: int, w: int) -> np.ndarray:
    grid = tokens[:, leading:]
    return grid.transpose(0, 2, 1).reshape(len(tokens), grid.shape[2], h, w)


def assert_features_are_the_grid(graph, proto, x, leading: int, h: int, w: int) -> None:
    (line,) = [a for a in graph.adaptations if "tokens laid out" in a]
    name = line.split("'")[1]
    expected = as_map(tokens_of(proto, name, x.numpy()), leading, h, w)
    (actual,) = ort_features(graph, x)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert float(np.abs(actual - expected).max()) <= TOLERANCE * scale


@pytest.mark.parametrize("export", [export_legacy, export_batch_1], ids=["dynamic", "b1"])
def test_the_last_token_sequence_is_the_features(export):
    """The features are the subsampled tokens after the LayerNorm, on their 4x4 grid: not
    the stem's 8x8 map, which is the last 4-D map every path runs through."""
    torch.manual_seed(0)
    proto = export(Subsampled(), 32)
    graph = onnxmtl.load(proto)
    assert graph.input_shape[2:] == (32, 32) and len(graph.features) == 1
    x = torch.randn(3, 3, 32, 32)
    assert_features_are_the_grid(graph, proto, x, leading=0, h=4, w=4)
    assert ort_features(graph, x)[0].shape == (3, 32, 4, 4)


def test_a_class_token_is_dropped_from_the_grid():
    """A ViT's features are its normalised patch tokens on the 8x8 grid, the class token
    in front of them dropped."""
    torch.manual_seed(0)
    proto = export_legacy(ClassToken(), 32)
    graph = onnxmtl.load(proto)
    x = torch.randn(2, 3, 32, 32)
    assert_features_are_the_grid(graph, proto, x, leading=1, h=8, w=8)
    assert any("first 1 token(s) dropped" in a for a in graph.adaptations)


def test_tokens_follow_a_non_square_input():
    """At 32x48 the stem's 8x12 map subsamples to a 4x6 grid of 24 tokens, not 6x4."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(Subsampled().eval(), torch.randn(1, 3, 32, 48), buffer, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    graph = onnxmtl.load(proto)
    x = torch.randn(2, 3, 32, 48)
    assert_features_are_the_grid(graph, proto, x, leading=0, h=4, w=6)


def test_a_flattened_map_is_not_taken_for_tokens():
    """(N, 16, 16) from flattening a 16-channel 4x4 map is shaped like a 4x4 grid of 16
    tokens, but holds no Transpose: the features stay the map itself."""
    torch.manual_seed(0)
    graph = onnxmtl.load(export_legacy(FlattenedMean(), 32))
    assert not any("tokens" in a for a in graph.adaptations)
    assert ort_features(graph, torch.randn(2, 3, 32, 32))[0].shape == (2, 16, 4, 4)


def test_a_token_backbone_loads_at_another_size():
    """Nothing in the dynamic export holds the declared size: loaded at 64x64, the features
    are the same module's exported at 64x64, on their 8x8 grid."""
    torch.manual_seed(0)
    module = Subsampled()
    graph = onnxmtl.load(export_legacy(module, 32), input_shape=(1, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    assert_features_are_the_grid(graph, export_legacy(module, 64), x, leading=0, h=8, w=8)


class PositionTable(nn.Module):
    """A ViT's learned position embedding, one row per token of the declared grid."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 24, 4, 4)
        self.position = nn.Parameter(torch.randn(1, 64, 24))
        self.norm = nn.LayerNorm(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)
        return self.norm(x + self.position).mean(1)


def test_a_position_table_follows_another_size():
    """The features are chosen where the file runs, at 32x32 (the normalised tokens on an
    8x8 grid); at 64x64 the position table held to the declared 64 tokens is resampled to
    the 16x16 grid, and the same features come out laid out on it, instead of a backbone cut
    at its patch embedding."""
    torch.manual_seed(0)
    proto = export_legacy(PositionTable(), 32)
    assert any("8x8 grid" in a for a in onnxmtl.load(proto).adaptations)
    graph = onnxmtl.load(proto, input_shape=(1, 3, 64, 64))
    assert any("[1, 64, 24] -> [1, 256, 24]" in a for a in graph.adaptations), graph.adaptations
    assert any("16x16 grid" in a for a in graph.adaptations), graph.adaptations
    assert ort_features(graph, torch.randn(2, 3, 64, 64))[0].shape == (2, 24, 16, 16)


class LinearNorm(nn.Module):
    """LeViT's linear layer: a BatchNorm over batch and tokens flattened together, reshaped
    back as its input."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, out, bias=False)
        self.bn = nn.BatchNorm1d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class Attention(nn.Module):
    """LeViT's attention: queries, keys and values from one LinearNorm, viewed per head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.qkv = LinearNorm(16, 48)
        self.proj = LinearNorm(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 2, -1).permute(0, 2, 1, 3).split([8, 8, 8], dim=3)
        attention = (q @ k.transpose(-2, -1)).softmax(-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, n, 16))
        return x.mean(1)


@pytest.fixture
def attention_model():
    """A supermodel of the LeViT-style backbone, its BatchNorm statistics not the identity."""
    torch.manual_seed(0)
    module = Attention().eval()
    with torch.no_grad():
        for bn in (module.qkv.bn, module.proj.bn):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return compile(onnxmtl.load(export_legacy(module, 32)), tasks()).eval()


def test_an_export_that_keeps_its_traced_batch_says_so(attention_model, tmp_path):
    """torch's exporter fuses LeViT's two Reshapes and keeps the batch it traced: the export
    with a dynamic batch fails on onnxruntime, which the user hears as a DynamicBatchError
    naming the fix, nothing written; with a fixed batch it matches PyTorch."""
    derived = derive(attention_model, attention_model.uniform_policy(SHARED)).eval()
    path = tmp_path / "model.onnx"
    with pytest.raises(DynamicBatchError, match="export with a fixed batch"):
        export(derived, path)
    assert not path.exists()
    report = export(derived, path, batch=1)
    assert report.max_rel_diff <= 1e-4 and report.input_shape[0] == 1


def test_run_exports_such_a_model_for_one_image_at_a_time(attention_model, tmp_path):
    """`run`'s exports fall back to a batch of 1 where the dynamic batch fails, and the
    file's input contract says so."""
    out = PipelineFolder(tmp_path)
    policy = attention_model.uniform_policy(SHARED)
    jobs = {out.SEARCHED: (attention_model, policy, None)}
    files = export_models(jobs, out, torch.randn(1, 3, 32, 32), {}, progress=False)
    assert input_contract(files[out.SEARCHED])["shape"][0] == 1
