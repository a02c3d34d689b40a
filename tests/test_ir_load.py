"""The load stage on real exports of TinyNet and on hand-built exporter quirks."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import onnxmtl
from onnxmtl.errors import FeatureError, ModelFileError, ShapeError
from onnxmtl.lower import lower
from onnxmtl.lower.verify import verify
from tests.conftest import EXPORTERS
from tests.helpers import (
    assert_gradients_reach_every_parameter,
    image,
    lowered_vs_ort,
    make_model,
    rand,
)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_tiny_export_loads_lowers_and_matches_onnxruntime(tiny_export, exporter):
    graph = onnxmtl.load(tiny_export(exporter))
    assert graph.features and graph.feature_shapes[0][1:] == (16, 16, 16)
    assert not isinstance(graph.input_shape[0], int), "a symbolic batch stays symbolic"
    assert graph.normalization == "present"
    ops = graph.op_counts()
    assert "Gemm" not in ops and "Flatten" not in ops, "the classifier is cut away"
    assert "Identity" not in ops and "Constant" not in ops and "CastLike" not in ops
    result = verify(graph)
    assert result.ok, result


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_tiny_units_params_and_depth(tiny_export, exporter):
    graph = onnxmtl.load(tiny_export(exporter))
    torch.manual_seed(0)
    model = __import__("tests.conftest", fromlist=["TinyNet"]).TinyNet()
    # Units: stem, block, dw, down, two SE convs, fuse (the Linear head is cut away).
    assert len(graph.units) == 7
    by_depth = sorted(u.depth for u in graph.units)
    assert by_depth == [1, 2, 3, 4, 5, 6, 7]
    stem = graph.units[0]
    assert stem.op_type == "Conv" and stem.norm == "BatchNormalization"
    assert stem.in_shape[1:] == (3, 32, 32) and stem.out_shape[1:] == (8, 16, 16)
    assert stem.params == 8 * 3 * 9 + 8 + 2 * 8
    assert stem.macs == 8 * 16 * 16 * 3 * 9 + 8 * 16 * 16  # conv, then one MAC per BN element
    expected = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head"))
    assert graph.params == expected
    assert sum(u.params for u in graph.units) == expected


def test_tiny_gradients_reach_every_parameter(tiny_export):
    module = lower(onnxmtl.load(tiny_export("dynamo")))
    assert_gradients_reach_every_parameter(module, torch.randn(2, 3, 32, 32))


def test_folded_export_reports_folded_normalisation(tiny_export):
    graph = onnxmtl.load(tiny_export("legacy17", fold_bn=True))
    assert graph.normalization == "folded"
    assert all(u.norm is None for u in graph.units)
    assert verify(graph).ok


def test_named_and_multiscale_features(tiny_export):
    path = tiny_export("legacy17")
    full = onnxmtl.load(path, features=None)
    maps = [v for n in full.nodes for v in n.outputs if v.shape is not None and len(v.shape) == 4]
    early, late = maps[2].name, maps[-3].name
    graph = onnxmtl.load(path, features=[early, late])
    assert graph.features == [early, late]
    assert verify(graph).ok
    with pytest.raises(FeatureError, match="no value named 'nope'"):
        onnxmtl.load(path, features="nope")


def _conv_model(weight_as: str, symbolic_hw: bool = False) -> onnx.ModelProto:
    """Conv + Relu whose weight is an initializer, a Constant node, or a constant subgraph."""
    w = rand(4, 3, 3, 3, seed=3)
    b = np.zeros(4, np.float32)
    shape = ("N", 3, "H", "W") if symbolic_hw else ("N", 3, 8, 8)
    nodes, inits = [], {}
    if weight_as == "initializer":
        inits = {"w": w, "b": b}
    elif weight_as == "constant-node":
        nodes += [
            helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(w)),
            helper.make_node("Constant", [], ["b"], value=onnx.numpy_helper.from_array(b)),
        ]
    elif weight_as == "constant-subgraph":
        inits = {"flat": w.reshape(-1), "shape": np.array(w.shape, np.int64)}
        inits |= {"zero": np.array([0], np.int64), "one": np.array([1], np.int64)}
        nodes += [
            helper.make_node("Reshape", ["flat", "shape"], ["w"]),
            helper.make_node("Shape", ["w"], ["wshape"]),
            helper.make_node("Slice", ["wshape", "zero", "one"], ["wshape1"]),
            helper.make_node(
                "ConstantOfShape",
                ["wshape1"],
                ["bz"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]),
            ),
            helper.make_node("Cast", ["bz"], ["b"], to=TensorProto.FLOAT),
        ]
    elif weight_as == "identity":
        inits = {"w0": w, "b0": b}
        nodes += [
            helper.make_node("Identity", ["w0"], ["w"]),
            helper.make_node("Identity", ["b0"], ["b"]),
        ]
    nodes += [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, shape[2], shape[3]])
    return make_model(nodes, [image(shape=shape)], [out], inits, 13)


@pytest.mark.parametrize(
    "weight_as", ["initializer", "constant-node", "constant-subgraph", "identity"]
)
def test_weights_in_any_form_become_plain_weights(weight_as):
    model = _conv_model(weight_as)
    graph = onnxmtl.load(model)
    assert [n.op_type for n in graph.nodes] == ["Conv", "Relu"]
    assert len(graph.units) == 1 and graph.units[0].params == 4 * 3 * 9 + 4
    expected, got = lowered_vs_ort(model, rand(2, 3, 8, 8))
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    params = dict(lower(graph).named_parameters())
    assert sum(p.numel() for p in params.values()) == 4 * 3 * 9 + 4


def test_symbolic_height_width_needs_input_shape():
    model = _conv_model("initializer", symbolic_hw=True)
    with pytest.raises(ShapeError, match="symbolic H, W.*--input-shape"):
        onnxmtl.load(model)
    graph = onnxmtl.load(model, input_shape=(1, 3, 16, 12))
    assert graph.input_shape[1:] == (3, 16, 12) and not isinstance(graph.input_shape[0], int)
    assert graph.units[0].out_shape[1:] == (4, 16, 12)
    assert graph.units[0].macs == 4 * 16 * 12 * 27
    assert verify(graph, batch=3).ok


def test_wrong_channel_count_in_input_shape_is_an_error():
    with pytest.raises(ShapeError, match="3 channels"):
        onnxmtl.load(_conv_model("initializer"), input_shape=(1, 1, 8, 8))


def test_shared_zero_bias_is_untied():
    """The legacy exporter merges equal zero biases into one initializer behind Identity nodes;
    each convolution must still own (and train) its own bias."""
    w1, w2 = rand(4, 3, 1, 1, seed=1), rand(4, 4, 1, 1, seed=2)
    zero = np.zeros(4, np.float32)
    nodes = [
        helper.make_node("Identity", ["zero"], ["b1"]),
        helper.make_node("Identity", ["zero"], ["b2"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
        helper.make_node("Conv", ["c1", "w2", "b2"], ["y"]),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    model = make_model(nodes, [image()], [out], {"w1": w1, "w2": w2, "zero": zero}, 13)
    graph = onnxmtl.load(model)
    biases = [u.weights[1] for u in graph.units]
    assert len(set(biases)) == 2
    module = lower(graph)
    n_params = sum(p.numel() for p in module.parameters())
    assert n_params == w1.size + w2.size + 2 * zero.size
    assert_gradients_reach_every_parameter(module, torch.randn(2, 3, 8, 8))


def test_external_data_is_loaded(tmp_path):
    model = _conv_model("initializer")
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        size_threshold=0,
        all_tensors_to_one_file=True,
        location="ext.data",
    )
    assert (tmp_path / "ext.data").exists()
    graph = onnxmtl.load(path)
    assert graph.units[0].params == 4 * 3 * 9 + 4
    assert verify(graph).ok


def test_gemm_and_matmul_units_count_params_and_macs():
    w, b = rand(16, 8, seed=1), rand(8, seed=2)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["t", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("LayerNormalization", ["a", "g", "beta"], ["y"], axis=-1),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 8])
    inits = {"w": w, "b": b, "g": rand(8, seed=3), "beta": rand(8, seed=4)}
    model = make_model(nodes, [image(shape=("N", 16, 4, 4))], [out], inits, 17)
    graph = onnxmtl.load(model, features=None)
    (unit,) = graph.units
    assert (
        unit.nodes == ("node_MatMul_1", "node_Add_2", "node_LayerNormalization_3")
        or len(unit.nodes) == 3
    )
    assert unit.norm == "LayerNormalization"
    assert unit.params == w.size + b.size + 16
    assert unit.macs == 4 * 4 * 8 * 16 + 4 * 4 * 8
    expected, got = lowered_vs_ort(model, rand(2, 16, 4, 4), features=None)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-4)
    module = lower(graph)
    assert sum(p.numel() for p in module.parameters()) == unit.params
    assert math.isclose(unit.params, graph.params)


def test_computed_zero_conv_bias_is_dropped():
    """dynamo exports give bias-free convolutions a zero bias computed by Expand; it is not a
    parameter of the source model and goes, while a stored zero bias stays."""
    model = _conv_model("constant-subgraph")
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape":
            node.attribute[0].t.CopyFrom(helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    graph = onnxmtl.load(model)
    assert graph.units[0].params == 4 * 3 * 9
    assert verify(graph).ok
    assert onnxmtl.load(_conv_model("initializer")).units[0].params == 4 * 3 * 9 + 4


def test_damaged_weights_and_invalid_graphs_are_refused_in_one_line():
    damaged = _conv_model("initializer")
    weight = damaged.graph.initializer[0]
    weight.raw_data = weight.raw_data[:-4]  # one float short of its shape
    with pytest.raises(ModelFileError, match=f"initializer '{weight.name}' holds") as info:
        onnxmtl.load(damaged)
    assert "\n" not in str(info.value)
    dangling = _conv_model("initializer")
    dangling.graph.node[0].input[0] = "nowhere"  # reads a value nothing defines
    with pytest.raises(ModelFileError, match="invalid ONNX model"):
        onnxmtl.load(dangling)
    inputs_too = _conv_model("initializer")  # IR 3 style: weights also declared as inputs
    inputs_too.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in inputs_too.graph.initializer
    )
    assert len(onnxmtl.load(inputs_too).units) == 1
