"""What the timm corpus exposed, each on a small model compared with onnxruntime (relative
difference over the largest output magnitude at most TOLERANCE), and the backbones that
cannot be supported, each with the one-line error a user sees."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxmtl
from onnxmtl.errors import FixedBatchError
from tests.conftest import converters
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


# Hybrid attention backbones whose batch-1 file (legacy17-b1) cannot be made dynamic, and the
# node each error names: MobileViT's patch unfolding and EfficientFormer-v2's attention move
# the batch through Transposes into axes that no Reshape target rewrite gives back. (LeViT,
# EdgeNeXt and EfficientViT load: tests/test_corpus.py checks them end to end.)
FIXED_BATCH_FAILURES = {
    "timm_mobilevit_xxs": "Reshape targets from node '/stages/stages.2/stages.2.1/Reshape'",
    "timm_efficientformerv2_s0": (
        "Reshape targets from node '/stages/stages.2/blocks/blocks.4/token_mixer/Reshape_3'"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIXED_BATCH_FAILURES))
def test_unsupported_fixed_batch_is_one_line_naming_the_node(corpus, name):
    with pytest.raises(FixedBatchError) as info:
        onnxmtl.load(corpus(name, converters.STATIC_BATCH))
    message = str(info.value)
    assert "\n" not in message
    assert "fixed batch of 1 that cannot be made dynamic" in message
    assert FIXED_BATCH_FAILURES[name] in message
    assert "re-export the model with a dynamic batch axis" in message
