"""Each op family we lower, as single-node models, against onnxruntime (atol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.helpers import image, lowered_vs_ort, make_model, output, rand

ATOL = 1e-5
I64 = np.int64


def case(
    op,
    attrs=None,
    inits=None,
    extra_inputs=(),
    opset=17,
    n_out=1,
    out_elem=TensorProto.FLOAT,
    out_shape=None,
):
    """One-node model reading x (N, 3, 8, 8) plus named weights."""
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, ["x", *extra_inputs], outs, **(attrs or {}))
    declared = [helper.make_tensor_value_info(o, out_elem, out_shape) for o in outs]
    return make_model([node], [image()], declared, inits or {}, opset)


CASES = {
    "ReduceMean-18-axes-input": case(
        "ReduceMean", {"keepdims": 1}, {"a": np.array([2, 3], I64)}, ["a"], 18
    ),
    "ReduceMean-18-keepdims0": case(
        "ReduceMean", {"keepdims": 0}, {"a": np.array([-1], I64)}, ["a"], 18
    ),
    "ReduceMax-18": case("ReduceMax", {"keepdims": 1}, {"a": np.array([1], I64)}, ["a"], 18),
    "ReduceSum-13": case("ReduceSum", {"keepdims": 0}, {"a": np.array([1, 3], I64)}, ["a"], 13),
    "ReduceL2-18-all-axes": case("ReduceL2", {"keepdims": 1}, opset=18),
    "AveragePool-19": case(
        "AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, opset=19
    ),
    "AveragePool-19-ceil": case(
        "AveragePool", {"kernel_shape": [2, 2], "strides": [3, 3], "ceil_mode": 1}, opset=19
    ),
    "Gelu-20": case("Gelu", opset=20),
    "Gelu-20-tanh": case("Gelu", {"approximate": "tanh"}, opset=20),
    "Pad-18-constant-axes": case(
        "Pad",
        {"mode": "constant"},
        {
            "p": np.array([1, 2, 3, 0], I64),
            "v": np.array(0.5, np.float32),
            "ax": np.array([2, 3], I64),
        },
        ["p", "v", "ax"],
        18,
    ),
    "Pad-19-reflect": case(
        "Pad", {"mode": "reflect"}, {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)}, ["p"], 19
    ),
    "Pad-21-edge": case(
        "Pad", {"mode": "edge"}, {"p": np.array([0, 0, 2, 2, 0, 0, 2, 2], I64)}, ["p"], 21
    ),
    "Pad-13-negative": case("Pad", {}, {"p": np.array([0, 0, -1, 1, 0, 0, 1, -2], I64)}, ["p"], 13),
    "Pad-2-attribute": case("Pad", {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "value": 2.0}, opset=9),
    "Reshape-14-allowzero": case(
        "Reshape", {"allowzero": 1}, {"s": np.array([-1, 6, 32], I64)}, ["s"], 14
    ),
    "Reshape-21-copy-zero": case("Reshape", {}, {"s": np.array([0, 0, -1], I64)}, ["s"], 21),
    "Split-18-num-outputs": case("Split", {"axis": 2, "num_outputs": 3}, opset=18, n_out=3),
    "Split-18-sizes": case("Split", {"axis": 1}, {"s": np.array([1, 2], I64)}, ["s"], 18, n_out=2),
    "Cast-19": case("Cast", {"to": TensorProto.DOUBLE}, opset=19, out_elem=TensorProto.DOUBLE),
    "Resize-19-nearest": case(
        "Resize",
        {"mode": "nearest"},
        {"r": np.array([], np.float32), "s": np.array([1, 1, 2, 2], np.float32)},
        ["r", "s"],
        19,
    ),
    "GroupNormalization-21": case(
        "GroupNormalization",
        {"num_groups": 3},
        {"g": rand(3, seed=1), "b": rand(3, seed=2)},
        ["g", "b"],
        21,
        out_shape=["N", 3, 8, 8],
    ),
}


@pytest.mark.parametrize("model", CASES.values(), ids=CASES.keys())
def test_single_op_matches_onnxruntime(model):
    x = rand(2, 3, 8, 8)
    expected, got = lowered_vs_ort(model, x)
    assert len(expected) == len(got)
    for ref, out in zip(expected, got):
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


def test_split_to_sequence_and_sequence_at_match_onnxruntime():
    nodes = [
        helper.make_node("SplitToSequence", ["x", "s"], ["seq"], axis=1),
        helper.make_node("SequenceAt", ["seq", "i"], ["y"]),
    ]
    model = make_model(
        nodes, [image()], [output()], {"s": np.array(2, I64), "i": np.array(1, I64)}, 18
    )
    x = rand(2, 3, 8, 8)
    expected, got = lowered_vs_ort(model, x)
    np.testing.assert_allclose(got[0], expected[0], atol=ATOL)
    assert got[0].shape == (2, 1, 8, 8)
