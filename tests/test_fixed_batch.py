"""Fixed-batch ONNX files (exported at a static batch of 1, no dynamic axis): the load stage
makes the batch symbolic, and the lowered model on a batch equals onnxruntime of the original
file run image by image; a file it cannot fix gives one line naming the fix."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision
from onnx import TensorProto, helper
from torch import nn
from torchvision.models.shufflenetv2 import channel_shuffle

import onnxmtl
from onnxmtl.compiler import SHARED, compile
from onnxmtl.errors import FixedBatchError, ShapeError
from onnxmtl.lower import lower
from onnxmtl.runtime import session
from tests.helpers import (
    assert_clean_error,
    assert_close,
    assert_random_policy_derives_and_exports,
    run_cli,
    tasks,
)

# Relative to the output's largest magnitude.
TOLERANCE = 1e-4


class ConvReshape(nn.Module):
    """A conv net that flattens with `view(x.size(0), ...)` and unflattens with a literal 1."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        _, c, h, w = y.shape
        y = y.view(y.size(0), c, h * w) * 0.5
        return torch.relu(self.b(y.reshape(1, c, h, w)))


class Attention(nn.Module):
    """A conv stem and torch's MultiheadAttention, whose reshapes merge batch and heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        _, c, h, w = y.shape
        t = y.view(y.size(0), c, h * w).permute(2, 0, 1)
        t = self.attn(t, t, t, need_weights=False)[0]
        return t.permute(1, 2, 0).reshape(1, c, h, w)


class PatchAttention(nn.Module):
    """MobileViT's unfolding: (B, C, H, W) to (B*patch area, patches, C), attention across the
    patches, folded back; a map 2x2 patches do not tile resized to whole patches first, as
    timm does. Traced at batch 1, the token target is `[patch area, patches, -1]`, whose -1
    would take the batch into the channels."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.norm = nn.LayerNorm(channels)
        self.mix = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        b, c, h, w = y.shape
        nh, nw = -(-h // 2), -(-w // 2)
        resized = (2 * nh, 2 * nw) != (h, w)  # as timm: resized to whole patches, and back
        if resized:
            y = F.interpolate(y, size=(2 * nh, 2 * nw), mode="bilinear", align_corners=False)
        t = y.reshape(b * c * nh, 2, nw, 2).transpose(1, 2)
        t = t.reshape(b, c, nh * nw, 4).transpose(1, 3).reshape(b * 4, nh * nw, -1)
        t = self.norm(t)
        t = torch.softmax(t @ t.transpose(1, 2), dim=-1) @ self.mix(t)
        t = t.contiguous().view(b, 4, nh * nw, -1).transpose(1, 3).reshape(b * c * nh, nw, 2, 2)
        t = t.transpose(1, 2).reshape(b, c, 2 * nh, 2 * nw)
        return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False) if resized else t


class WindowAttention(nn.Module):
    """TinyViT's, Swin's and EfficientViT's window attention: (B, H, W, C) cut into windows
    of 2x2, a depthwise conv on each window, attention within each window over (B*windows,
    tokens, C), the windows put back. Traced at batch 1, the conv's input is `[windows, -1, 2,
    2]` and the head split `[windows, tokens, heads, -1]`: each -1 would take the batch into
    the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.local = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.qkv = nn.Linear(8, 24)
        self.bias = nn.Parameter(torch.randn(2, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)
        b, h, w, c = y.shape
        t = y.view(b, h // 2, 2, w // 2, 2, c).transpose(2, 3).reshape(-1, 4, c)
        windows, tokens, _ = t.shape
        t = self.local(t.transpose(1, 2).reshape(windows, -1, 2, 2)).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).view(windows, tokens, 2, -1).split([4, 4, 4], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) + self.bias, dim=-1)
        t = (attn @ v).transpose(1, 2).reshape(windows, tokens, c)
        t = t.view(b, h // 2, w // 2, 2, 2, c).transpose(2, 3).reshape(b, h, w, c)
        return t.permute(0, 3, 1, 2)


class ChannelShuffle(nn.Module):
    """torchvision's ShuffleNet channel shuffle: torch's legacy exporter at a static batch,
    folding nothing, writes its targets as Constant sizes joined by a Concat, the map's height
    and width among them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(channel_shuffle(self.conv(x), 2))


def export_batch_1(module: nn.Module, size: int, fold: bool = True) -> onnx.ModelProto:
    """`module` through torch's legacy exporter at a static batch of 1; without `fold`, as
    converters/export_backbones.py exports a model with BatchNorms (training mode preserved,
    so the exporter folds no constants)."""
    buffer = io.BytesIO()
    mode = torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(
        module.eval(), x, buffer, dynamo=False, training=mode, do_constant_folding=fold
    )
    return onnx.load_from_string(buffer.getvalue())


def shuffle_joining_the_batch(size: int, w: np.ndarray) -> onnx.ModelProto:
    """A channel shuffle of 4 channels in 2 groups, then a 1x1 Conv of weights `w`, as torch's
    dynamo exporter writes ShuffleNet's: each Reshape target joins the batch read from the
    input to the declared size's constant sizes, so no target is a constant."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "split"], ["split_to"], axis=0),
        helper.make_node("Reshape", ["x", "split_to"], ["groups"]),
        helper.make_node("Transpose", ["groups"], ["swapped"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Concat", ["batch", "merge"], ["merge_to"], axis=0),
        helper.make_node("Reshape", ["swapped", "merge_to"], ["shuffled"]),
        helper.make_node("Conv", ["shuffled", "w"], ["y"]),
    ]
    ints = TensorProto.INT64
    inits = [
        helper.make_tensor("zero", ints, [1], [0]),
        helper.make_tensor("one", ints, [1], [1]),
        helper.make_tensor("split", ints, [4], [2, 2, size, size]),
        helper.make_tensor("merge", ints, [3], [4, size, size]),
        onnx.numpy_helper.from_array(w, "w"),
    ]
    graph = helper.make_graph(
        nodes,
        "shuffle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, size, size])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def export_dynamic_batch(module: nn.Module, size: int) -> onnx.ModelProto:
    """`module` through torch's dynamo exporter with the batch dynamic: the sizes it computes
    from the input's height and width are constants of the declared size."""
    x = torch.randn(2, 3, size, size)
    batch = {"x": {0: torch.export.Dim("N")}}
    program = torch.onnx.export(module.eval(), (x,), dynamo=True, dynamic_shapes=batch)
    assert program is not None
    return program.model_proto


def per_image(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """onnxruntime of `proto` on each image of `x` alone, stacked: what a batch must give."""
    sess = session(proto, ["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
    return [np.concatenate(outputs) for outputs in zip(*runs)]


def relative_diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-12)


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (ConvReshape, 8),
        (Attention, 8),
        (PatchAttention, 8),
        (WindowAttention, 8),
        (lambda: torchvision.models.mobilenet_v3_small(weights=None), 64),
    ],
    ids=["conv-reshape", "attention", "patch-attention", "window-attention", "mobilenet_v3_small"],
)
def test_lowered_batch_equals_the_original_per_image(make, size):
    torch.manual_seed(0)
    proto = export_batch_1(make(), size)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    graph = onnxmtl.load(proto, features=None)
    assert graph.static_batch and graph.batch_made_dynamic
    assert not isinstance(graph.input_shape[0], int)
    x = np.random.default_rng(1).standard_normal((3, 3, size, size)).astype(np.float32)
    module = lower(graph).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    got = [out] if isinstance(out, torch.Tensor) else list(out)
    for g, want in zip(got, per_image(proto, x), strict=True):
        assert relative_diff(g.numpy(), want) <= TOLERANCE


def test_dynamic_batch_is_left_alone():
    buffer = io.BytesIO()
    torch.onnx.export(
        ConvReshape().eval(),
        torch.randn(1, 3, 8, 8),
        buffer,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    graph = onnxmtl.load(onnx.load_from_string(buffer.getvalue()), features=None)
    assert not graph.static_batch and not graph.batch_made_dynamic


def test_back_end_on_a_fixed_batch_model(tmp_path):
    torch.manual_seed(0)
    proto = export_batch_1(ConvReshape(), 16)
    graph = onnxmtl.load(proto)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = compile(graph, tasks()).eval()
    with torch.no_grad():
        features = model.features(x, mode="fixed", policy=model.uniform_policy(SHARED))
    sess = session(graph.to_proto(), ["CPUExecutionProvider"])
    expected = np.concatenate(
        [sess.run(graph.features, {graph.input_name: x[i : i + 1].numpy()})[0] for i in range(2)]
    )
    want = per_image(proto, x.numpy())[0]
    assert relative_diff(expected, want) <= TOLERANCE
    for t in range(len(model.tasks)):
        assert_close(features[t][0], expected, f"task {t}")
    assert_random_policy_derives_and_exports(model, x, tmp_path)


def batch_inside_features() -> onnx.ModelProto:
    """A batch-1 graph that folds the batch into the channels and transposes it inward:
    [1, 4, 6, 6] -> [4, 36] -> [36, 4] -> [1, 36, 4]; no target keeps the batch first."""
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["a"], name="flatten"),
        helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0], name="swap"),
        helper.make_node("Reshape", ["b", "back"], ["y"], name="unflatten"),
    ]
    inits = [
        helper.make_tensor("flat", TensorProto.INT64, [2], [4, 36]),
        helper.make_tensor("back", TensorProto.INT64, [3], [1, 36, 4]),
    ]
    graph = helper.make_graph(
        nodes,
        "batch_inside",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 36, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_batch_that_cannot_be_freed_is_one_clear_error(tmp_path):
    with pytest.raises(FixedBatchError, match="dynamic batch axis"):
        onnxmtl.load(batch_inside_features(), features=None)
    path = tmp_path / "fixed.onnx"
    onnx.save(batch_inside_features(), path)
    proc = run_cli("verify", str(path), "--features", "y", "--batch", "2")
    assert_clean_error(proc, "flatten", "re-export", "Fixed-batch files")


def test_inspect_says_the_batch_was_made_dynamic(tmp_path):
    path = tmp_path / "conv.onnx"
    onnx.save(export_batch_1(ConvReshape(), 8), path)
    proc = run_cli("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "batch          fixed in the file, made dynamic" in proc.stdout


def test_a_static_batch_channel_shuffle_runs_at_another_size():
    """A batch-1 file whose shuffle targets hold the declared 8x8 map, loaded at 16x16: the
    targets follow the map and the batch frees; the lowered model on a batch of 3 equals the
    PyTorch module it was exported from (any size) at 16x16."""
    torch.manual_seed(0)
    module = ChannelShuffle().eval()
    proto = export_batch_1(module, 8, fold=False)
    graph = onnxmtl.load(proto, features=None, input_shape=(1, 3, 16, 16))
    assert graph.batch_made_dynamic
    assert len([a for a in graph.adaptations if a.startswith("Reshape ")]) == 2
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        got, want = lower(graph).eval()(x), module(x)
    assert relative_diff(got.numpy(), want.numpy()) <= TOLERANCE


def test_a_batch_1_file_newer_than_onnxruntime_reads_still_frees_its_batch():
    """IR version 14 (onnxruntime 1.31 reads at most 13): the rewrite's check runs the file at
    the version the loaded graph is served at, as `verify` does, instead of failing with
    onnxruntime's traceback; `inspect` still reports the file's own version."""
    torch.manual_seed(0)
    proto = export_batch_1(ConvReshape(), 8)
    proto.ir_version = 14
    graph = onnxmtl.load(proto, features=None)
    assert graph.batch_made_dynamic and graph.ir_version == 14
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        got = lower(graph).eval()(torch.from_numpy(x))
    proto.ir_version = 10
    assert relative_diff(got.numpy(), per_image(proto, x)[0]) <= TOLERANCE


def test_a_shuffle_joining_the_batch_to_constant_sizes_runs_at_another_size():
    """Reshape targets that join the batch read from the input to the declared 8x8 map's
    constant sizes, loaded at 16x16: the constant sizes follow the map; the lowered model on a
    batch of 3 equals torchvision's channel shuffle and the Conv at 16x16."""
    w = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype(np.float32)
    graph = onnxmtl.load(shuffle_joining_the_batch(8, w), features=None, input_shape=(1, 4, 16, 16))
    assert len([a for a in graph.adaptations if a.startswith("Reshape ")]) == 2
    x = torch.randn(3, 4, 16, 16)
    with torch.no_grad():
        got = lower(graph).eval()(x)
        want = nn.functional.conv2d(channel_shuffle(x, 2), torch.from_numpy(w))
    assert relative_diff(got.numpy(), want.numpy()) <= TOLERANCE


def test_a_file_whose_held_grid_no_rewrite_reads_is_refused_when_it_runs(tmp_path):
    """A dynamic-batch file that flattens each image's (3, 8, 8) map into `[-1, 2, 96]`:
    at 16x16 no rewrite tells which of 2 and 96 holds the grid, shape inference passes, and
    the -1 would take the grid's growth into the rows. Load runs the graph once and refuses
    it in one line naming the output, instead of handing back a graph that computes
    something else."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["R", 2, 96])
    target = onnx.numpy_helper.from_array(np.array([-1, 2, 96], np.int64), "target")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "target"], ["y"])], "rows", [x], [y], [target]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "rows.onnx"
    onnx.save(model, path)
    assert onnxmtl.load(path, features=None).input_shape[2:] == (8, 8)
    with pytest.raises(ShapeError) as refused:
        onnxmtl.load(path, features=None, input_shape=(1, 3, 16, 16))
    said = str(refused.value)
    assert "\n" not in said, said
    for part in ("does not run at 16x16 (it declares 8x8)", "'y' gives 8 rows for 2", "at 8x8"):
        assert part in said, said
