"""`load`: from an ONNX file or ModelProto to a normalised, shape-inferred, cut `Graph`."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common
import torch

from onnxmtl.errors import FeatureError, FixedBatchError, ModelFileError, OnnxMtlError, ShapeError
from onnxmtl.ir.autopad import explicit_pads
from onnxmtl.ir.batch import BATCH_SYMBOL, make_batch_dynamic
from onnxmtl.ir.features import auto_features, cut_at, image_size, sequence_shapes
from onnxmtl.ir.from_torch import export_module
from onnxmtl.ir.graph import Graph
from onnxmtl.ir.grid import adapt_grid
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
    shapes_at_batch,
)
from onnxmtl.ir.size_check import check_runs_at_size
from onnxmtl.ir.spatial import free_spatial_reshapes
from onnxmtl.ir.tokens import token_grid, tokens_to_map
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
    own_batch = dims[0] if isinstance(dims[0], int) else 1  # a concrete one for inference
    resized = input_shape is not None and tuple(input_shape[2:]) != tuple(dims[2:])
    held = partial(_held_size, source, features, (dims, input_shape) if resized else None, label)
    if resized:
        adaptations += free_spatial_reshapes(model, value, label)  # read at the declared size
        if input_shape is not None and all(isinstance(d, int) for d in dims[2:]):
            if features == "auto":  # the architecture's, chosen at the size the file runs at
                features = _feature_names(model, value, features, label, own_batch)
            declared = tuple(d for d in dims[2:] if isinstance(d, int))
            wanted = (input_shape[2], input_shape[3])
            adaptations += adapt_grid(model, value, (declared[0], declared[1]), wanted, own_batch)
    static_batch = isinstance(dims[0], int)
    original = ir.serde.serialize_model(model) if static_batch else None
    if original is not None:
        value.shape = ir.Shape([BATCH_SYMBOL, *dims[1:]])
    fix_input_shape(value, input_shape, label)
    if original is not None:  # the file run image by image at the size load works at
        original = at_input_size(original, value)

    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    common.IdentityEliminationPass()(model)
    with held():
        fold_until_stable(model, label)
    adaptations += explicit_pads(model)  # attributes only: the shapes hold
    original_outputs = [(name_of(v), shape_of(v)) for v in model.graph.outputs]
    names = _feature_names(model, value, features, label, own_batch)
    if names is not None:  # before the batch is freed: a classifier sized for the declared
        cut_at(model.graph, names, label)  # input cannot run at another, and goes anyway
        clean_up(model)
        if resized:  # the sizes past the cut agree at this size (a symbolic batch hides some)
            with held():
                shapes_at_batch(model, value, own_batch, label)
    if original is not None:
        with held():
            make_batch_dynamic(model, value, outputs_at(original, names), label)
        infer_shapes(model, label)  # the fixed-batch constants now follow the input's batch
    elif resized:  # the batch check above ran the graph at this size already
        check_runs_at_size(model, value, dims, label)
    if names is not None:  # features chosen: a head reads each as a map
        adaptations += _lay_out_tokens(model, value, label)
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


def _lay_out_tokens(model: ir.Model, image: ir.Value, label: str) -> list[str]:
    """Lay every feature output that is a token sequence on a grid out as an (N, C, h, w)
    map (`tokens.tokens_to_map`), the map taking the sequence's place among the outputs; one
    line per sequence, for `inspect`."""
    graph = model.graph
    if not any(v.shape is not None and len(v.shape) == 3 for v in graph.outputs):
        return []
    size, shapes = image_size(graph), sequence_shapes(model, image, 1, label)
    done: list[str] = []
    for k, value in enumerate(list(graph.outputs)):
        shape = shapes.get(name_of(value)) or shape_of(value)
        if shape is None or (grid := token_grid(shape, size)) is None:
            continue
        name = name_of(value)
        graph.outputs[k] = tokens_to_map(graph, value, grid, f"{name}_map")
        leading, h, w = grid
        dropped = f", its first {leading} token(s) dropped" if leading else ""
        tokens = f"(N, {shape[1]}, {shape[2]})"
        done.append(f"features '{name}' {tokens}: tokens laid out on a {h}x{w} grid{dropped}")
    if done:
        infer_shapes(model, label)
    return done


def _feature_names(
    model: ir.Model, image: ir.Value, features: Features, label: str, batch: int
) -> list[str] | None:
    """The feature values' names; 'auto' is chosen on the shapes at the file's own batch
    (1 where it is symbolic), which also fail where the graph past a feature holds another
    input size."""
    if features is None:
        return None
    if isinstance(features, str):
        if features == "auto":
            shapes = sequence_shapes(model, image, batch, label)
            return [auto_features(model.graph, label, shapes)]
        features = [f.strip() for f in features.split(",") if f.strip()]
    names = list(features)
    if not names:
        raise FeatureError(f"{label}: empty feature list; give 'auto' or value names.")
    return names


@contextmanager
def _held_size(
    source: str | Path | onnx.ModelProto,
    features: Features,
    sizes: tuple[Sequence, Sequence[int] | None] | None,
    label: str,
) -> Iterator[None]:
    """Where a load at another size than the file declares (`sizes`: declared, wanted) fails
    on a shape or on the batch rewrite at a node, the one line of `_refuse_held_size`."""
    try:
        yield
    except (ShapeError, FixedBatchError) as exc:
        if sizes is not None and (not isinstance(exc, FixedBatchError) or exc.node):
            declared, wanted = sizes
            assert wanted is not None  # a resized load is given its size
            _refuse_held_size(source, features, (declared, wanted), label, exc)
        raise


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
