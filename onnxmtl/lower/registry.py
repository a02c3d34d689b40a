"""Converter registry: (domain, op type, opset since-version) -> converter.

Our converters (in `onnxmtl.lower.ops`) take precedence; onnx2torch's registry serves the rest.
A converter has onnx2torch's signature: `(OnnxNode, OnnxGraph) -> OperationConverterResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from onnx import defs
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxmtl.registry import add

Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]

_REGISTRY: dict[tuple[str, str, int], Converter] = {}


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def register_converter(
    op_type: str, *versions: int, domain: str = "", override: bool = False
) -> Callable:
    """Register a converter for `op_type` at each opset since-version in `versions`.

    It takes precedence over onnx2torch's converter for the same key: this is how a user fixes
    or extends the lowering of one op. A key registered here already (by onnxmtl or another
    extension) is refused unless `override`.
    """

    def decorate(fn: Converter) -> Converter:
        for version in versions:
            key = (_domain(domain), op_type, version)
            add(_REGISTRY, key, fn, f"converter for {op_type} (opset {version})", override)
        return fn

    return decorate


@cache  # onnx's schema lookup, asked twice per node of every lowering, is slow
def since_version(domain: str, op_type: str, opset: int) -> int:
    """The since-version of `op_type`'s schema in force at `opset` (or `opset` if unknown)."""
    try:
        return defs.get_schema(op_type, max_inclusive_version=opset, domain=domain).since_version
    except (RuntimeError, defs.SchemaError):
        return opset


def find_converter(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter for `op_type` at `opset`, or None when neither registry has one."""
    domain = _domain(domain)
    version = since_version(domain, op_type, opset)
    ours = _REGISTRY.get((domain, op_type, version))
    if ours is not None:
        return ours
    return _CONVERTER_REGISTRY.get(OperationDescription(domain, op_type, version))


def onnx2torch_converter(domain: str, op_type: str, version: int) -> Converter | None:
    """onnx2torch's converter for `op_type` at since-version `version`, for converters of ours
    that handle only some of an op's cases and leave the rest to it."""
    return _CONVERTER_REGISTRY.get(OperationDescription(_domain(domain), op_type, version))
