"""AveragePool: asymmetric pads (SAME padding at strided even sizes, which tf2onnx writes for
Keras' `AveragePooling2D(padding="same")` and load makes explicit) and opset 19's dilations.
Symmetric pads go to onnx2torch's converter as at opset 11."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from torch import nn

from onnxmtl.lower.ops.common import result, unsupported_attr
from onnxmtl.lower.registry import register_converter

_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class AsymmetricAvgPool(nn.Module):
    """Average pooling with ONNX pads (begins..., ends...) that differ at the two ends: zero
    padding, then pooling, divided (unless `count_include_pad`) by how many of the window's
    elements are not padding."""

    def __init__(
        self, kernel: list[int], strides: list[int], pads: list[int], count_include_pad: bool
    ):
        super().__init__()
        self.kernel, self.strides, self.count_include_pad = kernel, strides, count_include_pad
        half = len(pads) // 2
        self.torch_pads: list[int] = []
        for begin, end in reversed(list(zip(pads[:half], pads[half:], strict=True))):
            self.torch_pads += [begin, end]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = _POOLS[len(self.kernel)]
        out = pool(F.pad(x, self.torch_pads), self.kernel, self.strides)
        if self.count_include_pad:
            return out
        ones = F.pad(torch.ones_like(x[:1, :1]), self.torch_pads)
        return out / pool(ones, self.kernel, self.strides)


@register_converter("AveragePool", 7, 10, 11, 19)
def _average_pool(node, graph):
    attrs = node.attributes
    dilations = list(attrs.get("dilations", []))
    if any(d != 1 for d in dilations):
        raise unsupported_attr(node, "dilations", dilations, "only dilation 1 is supported.")
    kernel = list(attrs["kernel_shape"])
    pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
    half = len(pads) // 2
    if attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET") and pads[:half] != pads[half:]:
        if attrs.get("ceil_mode", 0) or len(kernel) not in _POOLS:
            raise unsupported_attr(
                node, "pads", pads, "asymmetric pads need ceil_mode 0 and 1-3 spatial axes."
            )
        strides = list(attrs.get("strides", [1] * len(kernel)))
        module = AsymmetricAvgPool(kernel, strides, pads, bool(attrs.get("count_include_pad", 0)))
        return result(node, module)
    return _CONVERTER_REGISTRY[OperationDescription("", "AveragePool", 11)](node, graph)
