"""`load`: from an ONNX file or ModelProto to a normalised, shape-inferred, cut `Graph`."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common
import torch

from onnxmtl.errors import FeatureError, FixedBatchError, ModelFileError, OnnxMtlError, ShapeError
from onnxmtl.ir.autopad import explicit_pads
from onnxmtl.ir.batch import BATCH_SYMBOL, make_batch_dynamic
from onnxmtl.ir.features import auto_features, cut_at
from onnxmtl.ir.from_torch import export_module
from onnxmtl.ir.graph import Graph
from onnxmtl.ir.layout import to_channels_first
from onnxmtl.ir.normalize import (
    DropComputedZeroBiasPass,
    UntieInitializersPass,
    clean_up,
    fold_until_stable,
)
from onnxmtl.ir.pools import globalize_pools
from onnxmtl.ir.read import read_model
from onnxmtl.ir.reference import at_input_size, outputs_at
from onnxmtl.ir.shapes import (
    fix_input_shape,
    image_input,
    infer_shapes,
    known_shape,
    shape_of,
)
from onnxmtl.ir.size_check import check_runs_at_size
from onnxmtl.ir.spatial import free_spatial_reshapes
from onnxmtl.ir.units import find_units
from onnxmtl.ir.values import dims_of, name_of

Features = str | Sequence[str] | None
MIN_IR_VERSION = 4  # the first in which initializers need not be graph inputs


def load(
    source: str | Path | onnx.ModelProto | torch.nn.Module,
    features: Features = "auto",
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
) -> Graph:
    """Load an ONNX backbone into the IR.

    `features` is "auto" (cut at the last feature map before global pooling or flatten), one
    value name or several (multi-scale), or None to keep the model's own outputs.
    `input_shape` (N, C, H, W) fixes H and W where the model leaves them symbolic.
    A static batch (1, or the 64 of old files) is made symbolic (see `onnxmtl.ir.batch`), so
    the graph takes batches of any size.
    A `torch.nn.Module` is exported first (`export_module`, traced on `example_input`, which
    may also be given second: `load(module, images)`).
    """
    if isinstance(source, torch.nn.Module):
        if isinstance(features, torch.Tensor) and example_input is None:
            example_input, features = features, "auto"  # load(module, images): what one means
        if example_input is None:
            raise ModelFileError(
                f"{type(source).__name__}: a PyTorch module needs example_input, an (N, C, H, "
                "W) image tensor to trace it with."
            )
        with tempfile.TemporaryDirectory(prefix="onnxmtl-") as folder:
            path = export_module(source, example_input, Path(folder) / "backbone.onnx")
            return load(path, features, input_shape)
    model, label = read_model(source)
    original_counts = dict(Counter(n.op_type for n in model.graph))
    common.RemoveInitializersFromInputsPass()(model)
    # IR 3 wants every initializer among the inputs, and onnxruntime refuses the graph without
    # them: the version that made them optional holds the same graph.
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)
    value, adaptations = to_channels_first(model, image_input(model.graph, label))
    adaptations += globalize_pools(model, label)
    dims = dims_of(value)
    resized = input_shape is not None and tuple(input_shape[2:]) != tuple(dims[2:])
    if resized:
        adaptations += free_spatial_reshapes(model, value, label)  # read at the declared size
    static_batch = isinstance(dims[0], int)
    original = ir.serde.serialize_model(model) if static_batch else None
    if original is not None:
        value.shape = ir.Shape([BATCH_SYMBOL, *dims[1:]])
    fix_input_shape(value, input_shape, label)
    if original is not None:  # the file run image by image at the size load works at
        original = at_input_size(original, value)

    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common.IdentityEliminationPass()(model)
    try:
        fold_until_stable(model, label)
    except ShapeError as exc:
        if resized:
            assert input_shape is not None  # `resized` says it is given
            _refuse_held_size(source, features, (dims, input_shape), label, exc)
        raise
    adaptations += explicit_pads(model)  # attributes only: the shapes hold
    original_outputs = [(name_of(v), shape_of(v)) for v in model.graph.outputs]
    names = _feature_names(model.graph, features, label)
    if names is not None:  # before the batch is freed: a classifier sized for the declared
        cut_at(model.graph, names, label)  # input cannot run at another, and goes anyway
        clean_up(model)
    if original is not None:
        try:
            make_batch_dynamic(model, value, outputs_at(original, names), label)
        except FixedBatchError as exc:
            if resized and exc.node:  # the rewrite, not the file, stopped at a node
                assert input_shape is not None  # `resized` says it is given
                _refuse_held_size(source, features, (dims, input_shape), label, exc)
            raise
        infer_shapes(model, label)  # the fixed-batch constants now follow the input's batch
    elif resized:  # the batch check above ran the graph at this size already
        check_runs_at_size(model, value, dims, label)
    DropComputedZeroBiasPass()(model)
    UntieInitializersPass()(model)
    clean_up(model)  # what the dropped biases and the cut left unused

    return Graph(
        model=model,
        source=label,
        input_name=name_of(value),
        input_shape=known_shape(value),
        features=[name_of(v) for v in model.graph.outputs],
        units=find_units(model.graph),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        opset=model.opset_imports.get("", 1),
        ir_version=model.ir_version,
        original_op_counts=original_counts,
        original_outputs=original_outputs,
        adaptations=adaptations,
        static_batch=static_batch,
        batch_made_dynamic=original is not None,
    )


def _feature_names(graph, features: Features, label: str) -> list[str] | None:
    if features is None:
        return None
    if isinstance(features, str):
        if features == "auto":
            return [auto_features(graph, label)]
        features = [f.strip() for f in features.split(",") if f.strip()]
    names = list(features)
    if not names:
        raise FeatureError(f"{label}: empty feature list; give 'auto' or value names.")
    return names


def _refuse_held_size(
    source: str | Path | onnx.ModelProto,
    features: Features,
    sizes: tuple[Sequence, Sequence[int]],
    label: str,
    exc: FixedBatchError | ShapeError,
) -> None:
    """Raise a ShapeError where a file that fails at another size loads at the size it
    declares: its Reshape targets or constants hold that size's feature grid (a patch grid, a
    token count, an attention bias per position), which is what the user must hear, not how
    to free the batch or what onnx's shape inference met."""
    try:
        load(source, features)
    except OnnxMtlError:
        return
    declared, wanted = ("x".join(str(d) for d in size[2:]) for size in sizes)
    if isinstance(exc, FixedBatchError):
        why = "Reshape targets hold the declared size's feature grid" + (
            f" (the batch rewrite stops at node '{exc.node}')" if exc.node else ""
        )
    else:
        failed = exc.reason or str(exc).removeprefix(f"{label}: ").rstrip(".")
        why = (
            f"{failed}, as a Reshape target or a constant (a patch grid, an attention bias "
            "per position) holds the declared size"
        )
    raise ShapeError(
        f"{label}: loads at its declared {declared} but not at {wanted}: {why}; load it at "
        f"{declared}, or re-export it at {wanted}."
    ) from exc
