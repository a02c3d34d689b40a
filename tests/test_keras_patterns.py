"""What tf2onnx's Keras exports showed the load stage, in small fast graphs: each is compared
with onnxruntime on the original file (or, where that cannot run at the size tried, with the
PyTorch model it came from) within TOLERANCE of the output scale. The real exports are tested
in tests/test_corpus_keras.py (slow)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import onnxmtl
from onnxmtl.errors import ModelFileError
from onnxmtl.lower import lower
from onnxmtl.lower.verify import run_module
from onnxmtl.runtime import session
from tests.helpers import IR_VERSION, assert_close, image, make_model, output, rand

# Relative to the output scale (float32 through a few layers).
TOLERANCE = 1e-4


class ChannelsLastBatch1(nn.Module):
    """A channels-last classifier whose flatten keeps the traced batch of 1 as a constant
    (`Reshape` to [1, 16]), as fixed-batch Keras exports do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x.permute(0, 3, 1, 2)).mean((2, 3), keepdim=True)
        return self.fc(y.reshape(y.shape[0], 16))


def test_fixed_batch_file_loaded_at_another_size(tmp_path):
    """A static batch of 1 is made dynamic when load is given another input size too: the
    rewrite is checked against the file run at that size, not at the declared one."""
    torch.manual_seed(0)
    model = ChannelsLastBatch1().eval()
    path = tmp_path / "batch1.onnx"
    torch.onnx.export(
        model,
        torch.zeros(1, 32, 32, 3),
        str(path),
        dynamo=False,
        input_names=["x"],
        opset_version=17,
    )
    graph = onnxmtl.load(path, features=None, input_shape=(1, 3, 24, 24))
    assert graph.batch_made_dynamic and graph.input_shape == ("N", 3, 24, 24)
    nhwc = torch.rand(2, 24, 24, 3, generator=torch.Generator().manual_seed(0))
    (got,) = run_module(lower(graph), np.ascontiguousarray(nhwc.permute(0, 3, 1, 2).numpy()))
    with torch.no_grad():
        want = model(nhwc)
    assert_close(torch.as_tensor(got), want, "batch of 2 at 24x24")


def test_unconverted_tensorflow_op_is_refused_by_name(tmp_path):
    """tf2onnx leaves ops it cannot convert (Keras ConvNeXt's exact GELU: `Erfc`) in the file;
    load names the node in one line instead of the checker's schema error."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="stem/relu"),
        helper.make_node("Erfc", ["r"], ["y"], name="block/gelu/Erfc"),
    ]
    graph = helper.make_graph(nodes, "tf", [image()], [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    path = tmp_path / "erfc.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError) as info:
        onnxmtl.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert "node 'block/gelu/Erfc' has op type Erfc, which is no ONNX operator" in message


def _same_padded(mode: str) -> onnx.ModelProto:
    """tf2onnx's shape for Keras `padding="same"` at an unknown size, channels-last: Transpose
    to NCHW, then a strided Conv, a depthwise Conv and a MaxPool with `auto_pad` `mode`."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w1"], ["c1"], strides=[2, 2], auto_pad=mode),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=8, auto_pad=mode),
        helper.make_node(
            "MaxPool", ["c2"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad=mode
        ),
    ]
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.uniform(-0.5, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "w2": rng.uniform(-0.5, 0.5, (8, 1, 3, 3)).astype(np.float32),
    }
    return make_model(nodes, [image(shape=("N", "H", "W", 3))], [output()], weights)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("size", [16, 15])
def test_auto_pad_becomes_explicit_pads(mode, size):
    """Conv and MaxPool with `auto_pad` lower (onnx2torch takes explicit pads only) and equal
    onnxruntime on the original file fed the same images as NHWC, at even and odd sizes."""
    model = _same_padded(mode)
    graph = onnxmtl.load(model, features=None, input_shape=(1, 3, size, size))
    assert any("auto_pad of 3" in line for line in graph.adaptations), graph.adaptations
    nhwc = rand(2, size, size, 3)
    (want,) = session(model, ["CPUExecutionProvider"]).run(None, {"x": nhwc})
    (got,) = run_module(lower(graph), np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))
    assert got.shape == want.shape
    assert_close(torch.as_tensor(got), want, f"{mode} at {size}x{size}")


@pytest.mark.parametrize(
    "attrs",
    [
        {"auto_pad": "SAME_UPPER"},
        {"pads": [0, 0, 1, 1], "count_include_pad": 0},
        {"pads": [1, 0, 0, 1], "count_include_pad": 1},
    ],
    ids=["same-upper", "exclude-pad", "include-pad"],
)
def test_average_pool_with_asymmetric_pads(attrs):
    """Keras' `AveragePooling2D(3, 2, padding="same")` at an even size pads one more at the end
    than at the start, which onnx2torch refuses; it matches onnxruntime within TOLERANCE."""
    nodes = [
        helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], **attrs)
    ]
    model = make_model(nodes, [image(shape=("N", 4, 16, 16))], [output()])
    x = rand(2, 4, 16, 16)
    (want,) = session(model, ["CPUExecutionProvider"]).run(None, {"x": x})
    (got,) = run_module(lower(onnxmtl.load(model, features=None)), x)
    assert got.shape == want.shape == (2, 4, 8, 8)
    assert_close(torch.as_tensor(got), want, f"AveragePool {attrs}")
