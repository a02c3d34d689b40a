"""What the timm corpus exposed, each on a small model compared with onnxruntime (relative
difference over the largest output magnitude at most TOLERANCE)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import torch
from torch import nn

from tests.helpers import lowered_vs_ort, rand

TOLERANCE = 1e-5


def relative_diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-12)


class TokenNorm(nn.Module):
    """MobileViT's pattern: patches -> tokens -> LayerNorm over channels, the token target
    computed from the (dynamic) batch and the channels left to -1, so the file gives the
    normalised axis no size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        n, c, h, w = y.shape
        t = self.norm(y.transpose(1, 3).reshape(n * 2, h * w // 2, -1))
        return t.reshape(n, w, h, c).transpose(1, 3)


def test_layer_norm_over_symbolic_token_axes_matches_onnxruntime():
    torch.manual_seed(0)
    module = TokenNorm().eval()
    with torch.no_grad():  # a non-trivial affine transform
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.uniform_(-0.5, 0.5)
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.randn(1, 3, 8, 8),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    proto = onnx.load_from_string(buffer.getvalue())
    assert any(n.op_type == "LayerNormalization" for n in proto.graph.node)
    for batch in (2, 3):
        expected, got = lowered_vs_ort(proto, rand(batch, 3, 8, 8), features=None)
        for g, want in zip(got, expected, strict=True):
            assert relative_diff(g, want) <= TOLERANCE
