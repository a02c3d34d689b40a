"""`compile`: an IR `Graph` and N tasks into a searchable multi-task `SuperModel`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from onnxmtl.choices import SKIP_PROJECTIONS
from onnxmtl.compiler.backbone import build_backbone
from onnxmtl.compiler.branches import ConvGeometry, UnitBranches, make_skip
from onnxmtl.compiler.policy import SKIP, SPECIFIC
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.errors import ConfigError, ShapeError
from onnxmtl.ir import Graph, Unit, load
from onnxmtl.ir.multiscale import with_early_feature
from onnxmtl.lower import lower
from onnxmtl.tasks import Task, check_tasks, is_custom_head, load_tasks, make_head, reads_early_map

RENORM_OPS = ("Conv", "ConvTranspose")
CALIBRATION_BATCH = 8


def _feature_channels(graph: Graph) -> tuple[int, ...]:
    """The channel count of each feature value, for a head that reads an early map."""
    counts = []
    for name, shape in zip(graph.features, graph.feature_shapes):
        channels = shape[1] if shape is not None and len(shape) > 1 else None
        if not isinstance(channels, int):
            raise ShapeError(
                f"{graph.source}: the feature value '{name}' has shape {shape}; heads need a "
                "known channel count."
            )
        counts.append(channels)
    return tuple(counts)


def renormalized_units(graph: Graph, renormalize: bool | str = "auto") -> list[int]:
    """Indices of the units that get a normalisation re-inserted.

    Candidates are Conv/ConvTranspose units without one whose output has more than one
    position per channel (a BatchNorm on a 1x1 map, as in squeeze-excite, would only see the
    batch). 'auto' picks them where the graph has no normalisation left (folded away; a
    'partial' graph such as ConvNeXt normalises elsewhere); True always; False never.
    """
    if renormalize not in (True, False, "auto"):
        raise ConfigError(f"renormalize must be True, False or 'auto', got {renormalize!r}.")
    if renormalize is False or (renormalize == "auto" and graph.normalization != "folded"):
        return []
    return [i for i, u in enumerate(graph.units) if _renormalizable(u)]


def _renormalizable(unit: Unit) -> bool:
    shape = unit.out_shape
    if unit.op_type not in RENORM_OPS or unit.norm is not None or not shape or len(shape) < 3:
        return False
    return (
        isinstance(shape[1], int)
        and math.prod(d if isinstance(d, int) else 2 for d in shape[2:]) > 1
    )


def compile(
    graph: Graph | str | Path,
    tasks: Sequence[Task] | str | Path,
    *,
    renormalize: bool | str = "auto",
    shared_prefix: int = 0,
    calibration: torch.Tensor | None = None,
    skip_projection: str = "grouped",
    seed: int = 0,
) -> SuperModel:
    """Build the supermodel of `graph` for `tasks`.

    Every unit gets a shared branch (the ONNX weights), one copy per task (the same weights)
    and a skip; the first `shared_prefix` units may only be shared. Units whose normalisation
    was folded get one re-inserted (`renormalize`), initialised from `calibration` images
    (a seeded random batch if none is given; call `SuperModel.calibrate` with real data).
    `skip_projection` is 'grouped' (cheap, the default), 'full' (a dense 1x1 convolution) or
    'none' (no skip where the unit changes shape).
    Heads (each model builds its own, see `onnxmtl.tasks.make_head`) and skip projections are
    initialised from `seed`.
    """
    if not isinstance(graph, Graph):
        graph = load(graph)
    if isinstance(tasks, str | Path):
        tasks = load_tasks(tasks)
    tasks = list(tasks)
    check_tasks(tasks)
    if any(reads_early_map(t) for t in tasks):
        graph = with_early_feature(graph)
    if not isinstance(shared_prefix, int) or not 0 <= shared_prefix <= len(graph.units):
        raise ConfigError(
            f"shared_prefix must be between 0 and the number of units ({len(graph.units)}), "
            f"got {shared_prefix!r}."
        )
    feature_shape = graph.feature_shapes[-1]
    if not feature_shape or len(feature_shape) < 2 or not isinstance(feature_shape[1], int):
        raise ShapeError(
            f"{graph.source}: the feature value '{graph.features[-1]}' has shape "
            f"{feature_shape}; heads need a known channel count."
        )
    dense = [t.name for t in tasks if t.dense and not is_custom_head(t)]
    if dense and len(feature_shape) != 4:
        raise ShapeError(
            f"{graph.source}: the feature value '{graph.features[-1]}' has shape "
            f"{feature_shape}, not an (N, C, H, W) map; the dense task(s) {', '.join(dense)} "
            "need one: pick a 4-D value with --features (`onnxmtl inspect --values` lists them)."
        )
    if skip_projection not in SKIP_PROJECTIONS:
        raise ConfigError(
            f"skip_projection must be one of {', '.join(SKIP_PROJECTIONS)}, "
            f"got {skip_projection!r}."
        )
    renorm = renormalized_units(graph, renormalize)
    lowered = lower(graph)
    backbone = build_backbone(graph, lowered, set(renorm))
    nodes = {n.name: n for n in graph.nodes}

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        branches = []
        mask = torch.ones(len(graph.units), 3, dtype=torch.bool)
        for i, (unit, shared) in enumerate(zip(graph.units, backbone.units)):
            skip = make_skip(unit, _conv_geometry(nodes[unit.name], unit), skip_projection)
            branches.append(UnitBranches(shared, len(tasks), skip))
            if skip is None:
                mask[i, SKIP] = False
            if i < shared_prefix:
                mask[i, SPECIFIC] = mask[i, SKIP] = False
        heads = {
            t.name: make_head(
                t, _feature_channels(graph) if reads_early_map(t) else feature_shape[1]
            )
            for t in tasks
        }
    options = {
        "renormalize": renormalize,
        "shared_prefix": shared_prefix,
        "skip_projection": skip_projection,
        "seed": seed,
    }
    model = SuperModel(
        graph,
        tasks,
        backbone.graph,
        backbone.ops,
        backbone.weights,
        branches,
        heads,
        mask,
        options,
    )
    if renorm:
        model.calibrate(_calibration_batch(graph, calibration, seed))
        if calibration is None:
            model.calibration = "synthetic"
    return model


def _conv_geometry(node, unit: Unit) -> ConvGeometry | None:
    """Strides, groups and centre-tap offsets of a Conv unit's operator; None otherwise."""
    if unit.op_type != "Conv" or not unit.in_shape or not unit.out_shape:
        return None
    rank = len(unit.in_shape) - 2

    def ints(name: str, default: int) -> list[int]:
        attr = node.attributes.get(name)
        return list(attr.as_ints()) if attr is not None else [default] * rank

    strides, dilations = ints("strides", 1), ints("dilations", 1)
    kernel = list(node.inputs[1].const_value.shape[2:])
    pads = ints("pads", 0)[:rank]
    auto_pad = node.attributes.get("auto_pad")
    mode = auto_pad.as_string() if auto_pad is not None else "NOTSET"
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for i, o, s, k, d in zip(unit.in_shape[2:], unit.out_shape[2:], strides, kernel, dilations):
            total = 0  # where either size is symbolic
            if isinstance(i, int) and isinstance(o, int):
                total = max((o - 1) * s + (k - 1) * d + 1 - i, 0)
            pads.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
    elif mode == "VALID":
        pads = [0] * rank
    offsets = tuple((k - 1) * d // 2 - p for k, d, p in zip(kernel, dilations, pads))
    group = node.attributes.get("group")
    return ConvGeometry(tuple(strides), group.as_int() if group is not None else 1, offsets)


def _calibration_batch(graph: Graph, images: torch.Tensor | None, seed: int) -> torch.Tensor:
    if images is not None:
        return images
    shape = [CALIBRATION_BATCH if not isinstance(d, int) else d for d in graph.input_shape]
    shape[0] = CALIBRATION_BATCH
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
