"""Resize lowers to what ONNX specifies for every coordinate transformation and rounding mode
a backbone may use, compared with onnxruntime (float32, tolerance 1e-5 relative to the scale)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper

from onnxmtl.errors import LoweringError
from tests.helpers import image, lowered_vs_ort, make_model, output, rand

TOLERANCE = 1e-5
COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
LINEAR = [("linear", c, "round_prefer_floor") for c in COORDINATES]
NEAREST = [
    ("nearest", c, r)
    for c, r in itertools.product(
        [*COORDINATES, "tf_half_pixel_for_nn"],
        ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"],
    )
]
RESIZES = {"x2": [1, 1, 2, 2], "x0.5": [1, 1, 0.5, 0.5], "x1.5 x0.75": [1, 1, 1.5, 0.75]}


def resize_model(mode: str, coordinate: str, rounding: str, scales=None, sizes=None, opset=13):
    node = helper.make_node(
        "Resize",
        ["x", "", "scales" if scales else "", "sizes" if sizes else ""],
        ["y"],
        mode=mode,
        coordinate_transformation_mode=coordinate,
        nearest_mode=rounding,
    )
    inits = {}
    if scales:
        inits["scales"] = np.array(scales, np.float32)
    if sizes:
        inits["sizes"] = np.array(sizes, np.int64)
    return make_model([node], [image(shape=("N", 3, 8, 6))], [output()], inits, opset)


@pytest.mark.parametrize("scales", RESIZES.values(), ids=RESIZES.keys())
@pytest.mark.parametrize(("mode", "coordinate", "rounding"), LINEAR + NEAREST)
def test_resize_by_scales_matches_onnxruntime(mode, coordinate, rounding, scales):
    model = resize_model(mode, coordinate, rounding, scales=scales)
    (expected,), (got,) = lowered_vs_ort(model, rand(2, 3, 8, 6), features=None)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * np.abs(expected).max())


@pytest.mark.parametrize("opset", [13, 19])
@pytest.mark.parametrize(
    ("mode", "coordinate", "rounding"),
    [
        ("linear", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_floor"),
        ("linear", "half_pixel", "floor"),
    ],
)
def test_resize_to_sizes_matches_onnxruntime(mode, coordinate, rounding, opset):
    model = resize_model(mode, coordinate, rounding, sizes=[2, 3, 13, 5], opset=opset)
    (expected,), (got,) = lowered_vs_ort(model, rand(2, 3, 8, 6), features=None)
    assert got.shape == (2, 3, 13, 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * np.abs(expected).max())


def test_unsupported_coordinate_mode_is_one_line():
    model = resize_model("linear", "tf_crop_and_resize", "floor", scales=[1, 1, 2, 2])
    with pytest.raises(LoweringError, match="coordinate_transformation_mode='tf_crop_and_resize'"):
        lowered_vs_ort(model, rand(1, 3, 8, 6), features=None)
