"""Graphs as exporters of opsets 7-12 wrote them (the legacy model zoo): attribute axes,
Dropout with is_test or ratio inputs, LRN, Upsample, ImageScaler, weights listed as inputs
and wrong declared shapes. Each must load, lower, and match onnxruntime on the original file
(relative 1e-4), and one goes through compile, derive and export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxmtl
from onnxmtl.compiler import compile
from onnxmtl.errors import LoweringError
from onnxmtl.lower import lower
from onnxmtl.lower.verify import max_diffs, run_module, verify
from onnxmtl.runtime import session
from tests.helpers import assert_random_policy_derives_and_exports, rand, tasks

TOLERANCE = 1e-4
I64 = np.int64
# The IR version each opset's exporters wrote (onnx's table); onnxruntime reads all of them.
IR_VERSION = {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7}


def legacy_model(
    nodes: list[onnx.NodeProto],
    opset: int,
    inits: dict[str, np.ndarray] | None = None,
    value_info: list[onnx.ValueInfoProto] = (),
    size: int = 8,
) -> onnx.ModelProto:
    """Image x (N, 3, size, size) to y, with weights listed as graph inputs as IR 3 requires."""
    inits = inits or {}
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])]
    if IR_VERSION[opset] < 4:
        inputs += [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in inits.items()
        ]
    graph = helper.make_graph(
        nodes,
        "legacy",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION[opset]
    model = onnx.shape_inference.infer_shapes(model)  # exporters declared the output shape
    declared = model.graph.output[0].type.tensor_type
    if not declared.HasField("shape"):  # past an op with no schema (ImageScaler): rank 4
        declared.shape.CopyFrom(
            helper.make_tensor_type_proto(1, ["N", "C", "H", "W"]).tensor_type.shape
        )
    del model.graph.value_info[:]
    model.graph.value_info.extend(value_info)
    return model


def assert_matches_onnxruntime(model: onnx.ModelProto, tmp_path, reference=None) -> None:
    """Loaded from a file, lowered: verify passes, and the module equals onnxruntime on the
    original file (or on `reference` where onnxruntime refuses the original)."""
    path = tmp_path / "legacy.onnx"
    onnx.save(model, path)
    graph = onnxmtl.load(path, features=None)
    module = lower(graph)
    result = verify(graph, module, tolerance=TOLERANCE)
    assert result.ok, result
    shape = tuple(2 if not isinstance(d, int) else d for d in graph.input_shape)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    ref = reference if reference is not None else model
    expected = session(ref, ["CPUExecutionProvider"]).run(["y"], {"x": x})
    got = run_module(module, x)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max_diffs(expected, got)[1] <= TOLERANCE


def node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attrs)


def one(op: str, opset: int, attrs=None, inits=None, extra=()) -> onnx.ModelProto:
    return legacy_model([node(op, ["x", *extra], "y", **(attrs or {}))], opset, inits)


def bn_weights() -> dict[str, np.ndarray]:
    return {k: np.abs(rand(3, seed=i)) + 0.1 for i, k in enumerate(("s", "b", "m", "v"))}


def _conv_net(opset: int) -> onnx.ModelProto:
    """Conv, BatchNormalization, LRN, MaxPool, Dropout, Upsample and a constant made with
    Unsqueeze (attribute axes), as opset 7-9 exporters wrote a small segmentation net."""
    scales = {"scales": [1.0, 1.0, 2.0, 2.0]} if opset < 9 else {}
    up_inputs = ["p"] if opset < 9 else ["p", "sc"]
    nodes = [
        node("Conv", ["x", "w", "wb"], "c", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c", "s", "b", "m", "v"], "n", epsilon=1e-3),
        node("Relu", ["n"], "r"),
        node("LRN", ["r"], "l", size=3, alpha=1e-2, beta=0.75, bias=1.0),
        node("MaxPool", ["l"], "p", kernel_shape=[2, 2], strides=[2, 2]),
        node("Upsample", up_inputs, "u", mode="linear", **scales),
        node("Dropout", ["u"], "d", ratio=0.3),
        node("Unsqueeze", ["k"], "k4", axes=[0, 2, 3]),
        node("Add", ["d", "k4"], "y"),
    ]
    inits = {"w": rand(3, 3, 3, 3, seed=1), "wb": rand(3, seed=2), "k": rand(3, seed=3)}
    inits |= bn_weights()
    if opset >= 9:
        inits["sc"] = np.array([1, 1, 2, 2], np.float32)
    return legacy_model(nodes, opset, inits)


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_conv_net_with_dropout_lrn_upsample(opset, tmp_path):
    assert_matches_onnxruntime(_conv_net(opset), tmp_path)


def test_dropout_is_test_attribute_is_dropped(tmp_path):
    """Dropout's is_test (opset 6's) as some converters still wrote it at opset 7."""
    model = _conv_net(7)
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    dropout = next(n for n in model.graph.node if n.op_type == "Dropout")
    dropout.attribute.append(helper.make_attribute("is_test", 1))
    assert_matches_onnxruntime(model, tmp_path, reference=reference)


def test_concat_with_wrong_declared_shapes(tmp_path):
    """An opset-9 graph declaring an intermediate, a weight input and the output at shapes
    that contradict what the ops compute: they are re-inferred."""
    nodes = [
        node("Relu", ["x"], "r"),
        node("Mul", ["r", "k"], "m"),
        node("Concat", ["r", "m"], "y", axis=1),
    ]
    k = rand(1, 3, 8, 8)
    model = legacy_model(nodes, 9, {"k": k})
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.input.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 2, 6, 6]))
    model.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 3, 4]))
    path = tmp_path / "conflict.onnx"
    onnx.save(model, path)
    graph = onnxmtl.load(path, features=None)
    module = lower(graph)
    assert verify(graph, module, tolerance=TOLERANCE).ok
    x = rand(2, 3, 8, 8, seed=4)
    got = run_module(module, x)[0]
    np.testing.assert_allclose(
        got, np.concatenate([np.maximum(x, 0), np.maximum(x, 0) * k], 1), rtol=1e-5, atol=1e-6
    )


def _squeeze_unsqueeze(opset: int) -> onnx.ModelProto:
    """Attribute axes on constants (folded) and on activations (lowered)."""
    nodes = [
        node("Squeeze", ["k"], "k3", axes=[0]),
        node("Add", ["x", "k3"], "a"),
        node("ReduceMean", ["a"], "m", axes=[1], keepdims=0),
        node("Unsqueeze", ["m"], "u", axes=[1]),
        node("ReduceSum", ["ks"], "ks1", axes=[0], keepdims=0),
        node("Mul", ["u", "ks1"], "q"),
        node("ReduceMax", ["q"], "mx", axes=[2, 3], keepdims=1),
        node("Squeeze", ["mx"], "s", axes=[2, 3]),
        node("Unsqueeze", ["s"], "s4", axes=[2, 3]),
        node("Sub", ["q", "s4"], "y"),
    ]
    inits = {"k": rand(1, 3, 1, 1, seed=5), "ks": rand(2, 1, 1, seed=6)}
    return legacy_model(nodes, opset, inits)


@pytest.mark.parametrize("opset", [7, 9, 10, 11, 12])
def test_attribute_axes_on_constants_and_activations(opset, tmp_path):
    assert_matches_onnxruntime(_squeeze_unsqueeze(opset), tmp_path)


def _clip(opset: int) -> onnx.ModelProto:
    if opset < 11:
        return one("Clip", opset, {"min": -0.5, "max": 0.7})
    bounds = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}
    return one("Clip", opset, {}, bounds, ["lo", "hi"])


def _pad(opset: int) -> onnx.ModelProto:
    if opset < 11:
        return one("Pad", opset, {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "reflect"})
    return one(
        "Pad", opset, {"mode": "edge"}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)}, ["p"]
    )


def _slice(opset: int) -> onnx.ModelProto:
    if opset < 10:
        return one("Slice", opset, {"starts": [1, -6], "ends": [100, 5], "axes": [2, 3]})
    given = {"s": np.array([1, -6], I64), "e": np.array([100, 5], I64), "a": np.array([2, 3], I64)}
    return one("Slice", opset, {}, given, ["s", "e", "a"])


def _split(opset: int) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[3, 5]),
        node("Concat", ["b", "a"], "y", axis=2),
    ]
    return legacy_model(nodes, opset)


def _elementwise(opset: int) -> onnx.ModelProto:
    nodes = [
        node("Neg", ["x"], "r"),
        node("Sum", ["x", "r", "x"], "s"),
        node("Mean", ["x", "s"], "m"),
        node("Max", ["m", "r"], "n"),
        node("PRelu", ["n", "slope"], "p"),
        node("LeakyRelu", ["p"], "l", alpha=0.2),
        node("Identity", ["l"], "i"),
        node("Softmax", ["i"], "y", axis=1),
    ]
    return legacy_model(nodes, opset, {"slope": rand(3, 1, 1, seed=7)})


def _gemm(opset: int) -> onnx.ModelProto:
    nodes = [
        node("Flatten", ["x"], "f", axis=1),
        node("Gemm", ["f", "w", "b"], "y", transB=1, alpha=0.5, beta=2.0),
    ]
    return legacy_model(nodes, opset, {"w": rand(4, 192, seed=8), "b": rand(4, seed=9)})


def _resize(opset: int, mode: str) -> onnx.ModelProto:
    """Upsample before opset 10 (attribute scales before 9), Resize-10 at 10, Resize-11 from 11."""
    scales = {"sc": np.array([1, 1, 1.5, 2.5], np.float32)}
    if opset < 9:
        return one("Upsample", opset, {"mode": mode, "scales": [1.0, 1.0, 1.5, 2.5]})
    if opset < 10:
        return one("Upsample", opset, {"mode": mode}, scales, ["sc"])
    if opset == 10:
        return one("Resize", opset, {"mode": mode}, scales, ["sc"])
    scales["roi"] = np.array([], np.float32)
    # asymmetric linear from Resize-11 on is not lowered exactly yet (onnx2torch warns)
    coordinates = "asymmetric" if mode == "nearest" else "half_pixel"
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates, "nearest_mode": "floor"}
    return one("Resize", opset, attrs, scales, ["roi", "sc"])


SINGLE = {
    "BatchNormalization": lambda v: one(
        "BatchNormalization", v, {"epsilon": 1e-3}, bn_weights(), ["s", "b", "m", "v"]
    ),
    "LRN": lambda v: one("LRN", v, {"size": 5, "alpha": 1e-2}),
    "MaxPool": lambda v: one(
        "MaxPool", v, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    ),
    "AveragePool": lambda v: one(
        "AveragePool", v, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    ),
    "GlobalMaxPool": lambda v: one("GlobalMaxPool", v),
    "ImageScaler": lambda v: one("ImageScaler", v, {"scale": 0.5, "bias": [0.1, -0.2, 0.3]}),
    "Dropout": lambda v: one("Dropout", v, {"ratio": 0.4} if v < 12 else {}),
    "Clip": _clip,
    "Pad": _pad,
    "Slice": _slice,
    "Split": _split,
    "Elementwise": _elementwise,
    "Gemm": _gemm,
    "Resize-nearest": lambda v: _resize(v, "nearest"),
    "Resize-linear": lambda v: _resize(v, "linear"),
}
# onnxruntime runs ImageScaler only up to opset 9, as exporters wrote it.
CASES = [
    (name, v)
    for name in SINGLE
    for v in (7, 9, 10, 11, 12)
    if not (name == "ImageScaler" and v > 9)
]


@pytest.mark.parametrize(("name", "opset"), CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_op_at_old_opset_matches_onnxruntime(name, opset, tmp_path):
    assert_matches_onnxruntime(SINGLE[name](opset), tmp_path)


def test_dropout_12_with_ratio_and_training_mode_inputs(tmp_path):
    given = {"r": np.array(0.3, np.float32), "t": np.array(False)}
    assert_matches_onnxruntime(one("Dropout", 12, {}, given, ["r", "t"]), tmp_path)


def test_unsupported_old_attribute_is_one_line(tmp_path):
    model = one("MaxPool", 9, {"kernel_shape": [3, 3], "storage_order": 1})
    graph = onnxmtl.load(model, features=None)
    with pytest.raises(LoweringError) as info:
        lower(graph)
    message = str(info.value)
    assert "\n" not in message and "MaxPool" in message and "row major" in message


def test_opset9_net_compiles_derives_and_exports(tmp_path):
    """The whole back end on an old graph: supermodel == onnxruntime with every unit shared,
    a randomly derived model == its supermodel, and its ONNX export == PyTorch."""
    nodes = [
        node("ImageScaler", ["x"], "xs", scale=0.5, bias=[0.1, 0.2, 0.3]),
        node("Conv", ["xs", "w1", "b1"], "c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], "r1"),
        node("LRN", ["r1"], "l1", size=3),
        node("MaxPool", ["l1"], "p1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Dropout", ["p1"], "d1", ratio=0.5),
        node("Conv", ["d1", "w2", "b2"], "c2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Relu", ["c2"], "r2"),
        node("Upsample", ["r2", "sc"], "u", mode="nearest"),
        node("Concat", ["u", "r1"], "cat", axis=1),
        node("Conv", ["cat", "w3", "b3"], "y", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
    ]
    inits = {
        "w1": rand(8, 3, 3, 3, seed=1) * 0.3,
        "b1": rand(8, seed=2),
        "w2": rand(8, 8, 3, 3, seed=3) * 0.2,
        "b2": rand(8, seed=4),
        "w3": rand(16, 16, 3, 3, seed=5) * 0.2,
        "b3": rand(16, seed=6),
        "sc": np.array([1, 1, 2, 2], np.float32),
    }
    model = legacy_model(nodes, 9, inits, size=32)
    model.graph.value_info.append(
        helper.make_tensor_value_info("cat", TensorProto.FLOAT, [1, 9, 8, 8])
    )
    path = tmp_path / "legacy9.onnx"
    onnx.save(model, path)
    graph = onnxmtl.load(path)
    module = lower(graph)
    assert verify(graph, module, tolerance=TOLERANCE).ok
    supermodel = compile(graph, tasks()[:2]).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    assert_random_policy_derives_and_exports(supermodel, x, tmp_path)
