"""Read an ONNX model from a path or a ModelProto into onnx_ir, with clear errors on bad files."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx import helper

from onnxmtl.errors import ModelFileError, first_line
from onnxmtl.ir.legacy import modernise

MIN_OPSET = 9
PACKED_TYPES = {  # several elements a byte, or no fixed size
    onnx.TensorProto.STRING,
    onnx.TensorProto.INT4,
    onnx.TensorProto.UINT4,
    *(
        getattr(onnx.TensorProto, n)
        for n in ("FLOAT4E2M1", "INT2", "UINT2")
        if hasattr(onnx.TensorProto, n)
    ),
}
OLDEST_CONVERTIBLE_OPSET = 7
UPGRADE_OPSET = 9


def read_model(source: str | Path | onnx.ModelProto) -> tuple[ir.Model, str]:
    """Read and validate `source`; return the model and a label naming it in messages.

    Files with external data are read with their data (onnx keeps it to the file's folder); a
    ModelProto must hold its weights itself, since nothing bounds where its locations point.
    Models older than opset 9 are upgraded to opset 9 with onnx's version converter: only as
    far as needed, since its later steps lose attributes (Upsample's linear mode becomes
    Resize-13's half-pixel one).
    """
    if isinstance(source, onnx.ModelProto):
        label = source.graph.name or "<ModelProto>"
        _refuse_external_data(source.graph, label)
        proto = onnx.ModelProto()
        proto.CopyFrom(source)  # modernise rewrites it; the caller's stays as it is
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise ModelFileError(f"{label}: no such file; check the path to the .onnx model.")
        if path.is_dir():
            raise ModelFileError(f"{label}: is a directory; give the path of an .onnx file.")
        try:
            proto = onnx.load(str(path), load_external_data=True)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ModelFileError(
                f"{label}: not a readable ONNX model ({type(exc).__name__}: {exc}); "
                "the file may be truncated or not ONNX at all. Re-export it."
            ) from exc
        except FileNotFoundError as exc:
            raise ModelFileError(
                f"{label}: external data file missing ({exc.filename}); keep the weight files "
                "next to the model."
            ) from exc
        except onnx.checker.ValidationError as exc:  # external data that may not be read
            raise ModelFileError(
                f"{label}: external data not read ({first_line(exc)}); keep the weight files in "
                "the model's folder."
            ) from exc
        except OSError as exc:
            raise ModelFileError(f"{label}: cannot read ({exc.strerror or exc}).") from exc
    if not proto.graph.node:
        raise ModelFileError(f"{label}: the graph has no nodes; export the backbone again.")
    modernise(proto)
    opset = default_opset(proto)
    if opset < OLDEST_CONVERTIBLE_OPSET:
        raise ModelFileError(
            f"{label}: opset {opset} is too old (need >= {OLDEST_CONVERTIBLE_OPSET}); "
            "re-export the model with a recent exporter."
        )
    if opset < MIN_OPSET:
        proto = _upgrade(proto, label, opset)
    _refuse_foreign_ops(proto, label, default_opset(proto))
    try:
        _check_initializers(proto.graph, label)
        onnx.checker.check_model(_without_weights(proto))
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(
            f"{label}: invalid ONNX model ({first_line(exc)}); fix or re-export it."
        ) from exc
    return ir.serde.deserialize_model(proto), label


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers, and those of node attributes and subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _tensors(sub)


def _refuse_external_data(graph: onnx.GraphProto, label: str) -> None:
    """A ModelFileError where a tensor of an in-memory model points to data in a file."""
    for tensor in _tensors(graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelFileError(
                f"{label}: weight '{tensor.name}' points to data in a file; an in-memory model "
                "must hold its weights (load the .onnx file by its path instead)."
            )


def _without_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` with its initializers declared as graph inputs instead, for onnx's checker:
    given the weights, it serialises every one of them, which took most of a load's time."""
    light = onnx.ModelProto()
    for field, value in proto.ListFields():
        if field.name != "graph":
            _copy_field(light, field, value)
    for field, value in proto.graph.ListFields():
        if field.name != "initializer":
            _copy_field(light.graph, field, value)
    declared = {v.name for v in proto.graph.input}
    light.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in proto.graph.initializer
        if t.name not in declared
    )
    return light


def _copy_field(target, field, value) -> None:
    # protobuf < 5.29 has only `label`
    repeated = getattr(field, "is_repeated", None)
    if repeated if repeated is not None else field.label == field.LABEL_REPEATED:
        getattr(target, field.name).extend(value)
    elif field.message_type is not None:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def _check_initializers(graph: onnx.GraphProto, label: str) -> None:
    """Raise ModelFileError naming the first initializer whose raw data does not hold as many
    elements as its shape says (the check onnx's checker makes, done here without copying)."""
    for t in graph.initializer:
        if not t.raw_data or t.data_type in PACKED_TYPES:
            continue
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError):
            continue
        expected = math.prod(t.dims) * itemsize
        if len(t.raw_data) != expected:
            raise ModelFileError(
                f"{label}: initializer '{t.name}' holds {len(t.raw_data)} bytes where its "
                f"shape {list(t.dims)} needs {expected}; the file is damaged, re-export it."
            )


def _refuse_foreign_ops(proto: onnx.ModelProto, label: str, opset: int) -> None:
    """Raise ModelFileError naming the first node of the default domain that is no ONNX
    operator: tf2onnx writes TensorFlow ops it cannot convert (`Erfc`,
    `StatefulPartitionedCall`) into the file as they are, and only says so in its log."""
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            raise ModelFileError(
                f"{label}: node '{node.name}' has op type {node.op_type}, which is no ONNX "
                "operator (an op the exporter left unconverted, such as TensorFlow ops in a "
                "tf2onnx file); re-export the model so that every node is ONNX."
            ) from None


def default_opset(proto: onnx.ModelProto) -> int:
    """The opset of the default ONNX domain that `proto` imports."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def _upgrade(proto: onnx.ModelProto, label: str, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, UPGRADE_OPSET)
    except Exception as exc:  # the converter raises many unrelated types
        raise ModelFileError(
            f"{label}: opset {opset} could not be upgraded to {UPGRADE_OPSET} ({exc}); "
            f"re-export the model at opset >= {MIN_OPSET}."
        ) from exc
    # The converter keeps the old IR version, under which the initializers it adds (Pad's pads,
    # Upsample's scales) would have to be graph inputs too.
    upgraded.ir_version = max(
        upgraded.ir_version, helper.find_min_ir_version_for(upgraded.opset_import)
    )
    return upgraded
