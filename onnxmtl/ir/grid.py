"""Constants that hold the declared size's grid, made to hold another input size's.

Attention backbones exported at one size carry it in constants: Reshape targets with a
token count or a grid's side (MobileViT's patches, EfficientFormer's heads), Expand shapes
over the tokens (EdgeNeXt's channel attention), a bias per pair of positions (LeViT,
EfficientFormer) and a position table per token (ViTs, EdgeNeXt). Loaded at another size,
each is rewritten for the wanted grid: a target's entries follow the sizes they split or
merge, a bias per pair of relative positions is cropped to the smaller grid (exact: it
depends only on the offset), and a position table is resampled bicubically (as timm does).
A map that windows or patches of the declared size do not tile is padded to whole windows
or resized to whole patches before it is cut, and cut or resized back once it is put back
together, as timm's TinyViT and MobileViT do at a size they were not traced at.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxmtl.ir.normalize import add_initializer
from onnxmtl.ir.shapes import shapes_with
from onnxmtl.ir.spatial import Piece, target_pieces
from onnxmtl.ir.tokens import follows_image, token_grids
from onnxmtl.ir.values import name_of

Size = tuple[int, int]
Dims = tuple[int, ...]  # a shape whose sizes are all known
Shapes = dict[str, Dims]
Grid = tuple[int, int, int]  # (extra leading tokens, h, w)
Mapping = dict[int, tuple[int, ...]]  # a declared grid's side or count: the wanted ones
STRIDES = (2, 4, 8, 16, 32, 64)
MAX_PATCH = 2  # sizes up to a patch's side are never a grid's or a window's: MobileViT's 2x2
MAX_ROUNDS = 256  # rewrites reach one node further per round of shape inference
_ELEMENTWISE = {"Add", "Mul", "Sub", "Div"}


@dataclass(frozen=True)
class _Padded:
    """A map padded to whole windows, or resized to whole patches, before the Reshape that
    cuts them: once a Reshape past the attention puts it back together, it is cut or
    resized back to its own sides."""

    value: ir.Value  # the padded map
    declared: Dims  # its shape at the declared size
    shape: Dims  # its shape
    own: Dims  # the map's own shape, to put it back to
    resized: bool  # resized (bilinear) rather than padded with zeros


@dataclass(frozen=True)
class _Round:
    """What one round of rewrites reads: each value's shape at the declared size (`old`)
    and, as far as they hold, at the wanted one (`new`), the grids' sizes at both, and the
    image's size at both."""

    old: Shapes
    new: Shapes
    seen: Mapping  # read off the maps whose shapes both sizes know
    strided: Mapping  # the image's size over each stride
    declared: Size
    wanted: Size
    padded: list[_Padded]  # maps padded and not yet put back

    def known(self, value: ir.Value | None) -> tuple[Dims, Dims] | None:
        """A value's declared and wanted shapes where both are known."""
        if value is None or name_of(value) not in self.old or name_of(value) not in self.new:
            return None
        return self.old[name_of(value)], self.new[name_of(value)]


def adapt_grid(
    model: ir.Model, image: ir.Value, declared: Size, wanted: Size, batch: int
) -> list[str]:
    """Rewrite the constants of `model` that hold the `declared` input size's grid to hold
    the `wanted` one's; one line per constant, for `inspect`. Shapes are inferred at the
    declared size and, each round, at the wanted one as far as they hold (a symbolic batch
    at `batch`); the round rewrites the constants that first break them."""
    graph = model.graph
    old = _shapes_at(model, image, declared, batch)
    done: list[str] = []
    rewritten: set[ir.Node] = set()
    padded: list[_Padded] = []
    strided = _strided_sides(declared, wanted)
    for _ in range(MAX_ROUNDS):
        new = _shapes_at(model, image, wanted, batch)
        seen = _seen_sides(old, new, declared)
        step = _Round(old, new, seen, strided, declared, wanted, padded)
        stale: set[str] = set()  # past a rewrite, this round's shapes no longer hold
        for node in graph:
            if any(v is not None and name_of(v) in stale for v in node.inputs):
                stale.update(name_of(v) for v in node.outputs)
                continue
            adapt = _ADAPTERS.get(node.op_type)
            line = None if adapt is None or node in rewritten else adapt(node, step)
            if line is not None:
                done.append(line)
                rewritten.add(node)
                stale.update(name_of(v) for v in node.outputs)
        if not stale:
            break
    return done


def _shapes_at(model: ir.Model, image: ir.Value, size: Size, batch: int) -> Shapes:
    """Every value's whole shape that onnx's lenient inference finds with the image at
    `size` and the batch at `batch`: all before the first node the declared grid breaks."""
    found = shapes_with(model, image, {0: batch, 2: size[0], 3: size[1]}, "", strict=False)
    return {
        name: tuple(int(d) for d in shape)
        for name, shape in found.items()
        if all(isinstance(d, int) for d in shape)
    }


def _seen_sides(old: Shapes, new: Shapes, declared: Size) -> Mapping:
    """Each grid side and count at the declared size that a map whose shape both sizes know
    shows at the wanted one."""
    seen: dict[int, set[int]] = {}
    for name, shape in old.items():
        shape2 = new.get(name)
        if shape2 is None or len(shape) != 4 or len(shape2) != 4 or shape[2:] == shape2[2:]:
            continue  # equal: a rewrite before it is still to come
        if follows_image(shape[2], shape[3], declared):
            (h, w), (h2, w2) = shape[2:], shape2[2:]
            for a, b in ((h, h2), (w, w2), (h * w, h2 * w2)):
                seen.setdefault(a, set()).add(b)
    return {a: tuple(sorted(b)) for a, b in seen.items() if a > MAX_PATCH}


def _strided_sides(declared: Size, wanted: Size) -> Mapping:
    """Each side and count of the image's grid over each stride at the declared size, and
    at the wanted one: the grids no map shows yet, past the first constant that breaks."""
    found: dict[int, set[int]] = {}
    for stride in STRIDES:
        h, w = -(-declared[0] // stride), -(-declared[1] // stride)
        h2, w2 = -(-wanted[0] // stride), -(-wanted[1] // stride)
        for a, b in ((h, h2), (w, w2), (h * w, h2 * w2)):
            if a > MAX_PATCH and a != b:
                found.setdefault(a, set()).add(b)
    return {a: tuple(sorted(b)) for a, b in found.items()}


def _joined(*mappings: Mapping) -> Mapping:
    """The sizes each of `mappings` offers, later ones first where they share a size."""
    joined: dict[int, set[int]] = {}
    for mapping in mappings:
        for a, b in mapping.items():
            joined.setdefault(a, set()).update(b)
    return {a: tuple(sorted(b)) for a, b in joined.items()}


def _constant(value: ir.Value | None) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _adapt_reshape(node: ir.Node, step: _Round) -> str | None:
    """A Reshape whose target (constant, or constant sizes joined to computed ones such as
    a dynamic batch) no longer splits or merges its data's wanted shape; its constant
    entries and a computed entry's constant factors are rewritten, its computed sizes follow
    the graph already. Its data may be padded or resized first, and a map padded before it
    put back after it."""
    known, shape = step.known(node.inputs[0]), node.inputs[1]
    pieces = None if shape is None else target_pieces(shape)
    if known is None or pieces is None or (known[0] == known[1] and not step.padded):
        return None
    data, data2 = known
    target = [e for _, entries in pieces for e in entries]  # None where computed
    out = step.old.get(name_of(node.outputs[0]), ())  # the sizes -1 and computed ones stood for
    if (-1 in target or None in target) and len(out) != len(target):
        return None
    entries = [
        out[k] if e is None or e == -1 else data[k] if e == 0 and k < len(data) else e
        for k, e in enumerate(target)
    ]
    sizes, factors, entry_of = _factored(pieces, entries)
    as_map = out if len(sizes) == len(entries) else ()  # the declared output, size by size
    found = _retarget_data(sizes, data, data2, step, as_map)
    resized = None
    if found is None:
        resized = _whole_patches(node, sizes, data, data2)
        found = None if resized is None else _retarget_data(sizes, data, resized, step, as_map)
    if found is None:
        return None
    factored, pads = found
    chosen = [
        math.prod(r for r, k in zip(factored, entry_of) if k == e) for e in range(len(target))
    ]
    changed = [(f, r) for f, n, r in zip(factors, sizes, factored) if f is not None and r != n]
    retarget = [e if e in (-1, 0, None) else r for e, r in zip(target, chosen)]
    restore = next(
        (p for p in step.padded if p.shape == tuple(chosen) and _rebuilds(node, p)), None
    )
    if retarget == target and not pads and resized is None and restore is None and not changed:
        return None
    line = f"Reshape '{node.name}': target {_shown(target)} -> {_shown(retarget)}"
    for (mul, index), size in changed:
        factor = _factor(mul, index)
        line += f", a factor of its computed entry {int(factor.reshape(-1)[0])} -> {size}"
        _replace_input(mul, index, np.full_like(factor, size))
    if pads:
        whole = tuple(pads.get(k, n) for k, n in enumerate(data2))
        widths = [0] * len(data2) + [size - n for size, n in zip(whole, data2)]  # at the ends
        value = _before(node, "Pad", _constant_input(node, "pads", widths))
        step.padded.append(_Padded(value, data, whole, data2, resized=False))
        line += f", its data padded to {list(whole)}"
    if resized is not None:
        value = _before(node, "Resize", *_scales(node, data2, resized))
        step.padded.append(_Padded(value, data, resized, data2, resized=True))
        line += f", its data resized to {list(resized)}"
    if retarget != target:
        _write_target(node, pieces, retarget)
    if restore is not None:
        step.padded.remove(restore)
        _put_back(node, restore)
        line += f", {'resized' if restore.resized else 'cropped'} back to {list(restore.own)}"
    return line


Factor = tuple[ir.Node, int]  # a Mul and the input of it that is a constant factor


def _factored(
    pieces: list[Piece], sizes: list[int]
) -> tuple[list[int], list[Factor | None], list[int]]:
    """A target's `sizes` with each computed entry that is one computed size (the batch)
    times constants split into those sizes, in order (MobileViT's batch*channels*patch rows,
    traced with the rows a constant); each size's constant factor where it is one, and the
    entry each size is part of."""
    factored: list[int] = []
    factors: list[Factor | None] = []
    entry_of: list[int] = []
    k = 0
    for value, entries in pieces:
        leaves = _mul_leaves(value) if entries == [None] else None
        constant = math.prod(_size(*leaf) for leaf in leaves or () if leaf is not None)
        if leaves is None or sizes[k] % constant:
            factored += sizes[k : k + len(entries)]
            factors += [None] * len(entries)
            entry_of += range(k, k + len(entries))
        else:
            factored += [sizes[k] // constant if f is None else _size(*f) for f in leaves]
            factors += leaves
            entry_of += [k] * len(leaves)
        k += len(entries)
    return factored, factors, entry_of


def _mul_leaves(value: ir.Value) -> list[Factor | None] | None:
    """The factors of a one-entry target piece made by Unsqueeze from a product of scalars:
    a constant's Mul and input, None for the one computed factor; None where the piece is
    not such a product."""
    node = value.producer()
    if node is None or node.op_type != "Unsqueeze":
        return None
    leaves: list[Factor | None] = []
    todo: list[tuple[ir.Value | None, Factor | None]] = [(node.inputs[0], None)]
    while todo:
        scalar, at = todo.pop()
        if scalar is None:
            return None
        producer, const = scalar.producer(), ir.convenience.get_const_tensor(scalar)
        if at is not None and const is not None and const.size == 1:
            leaves.append(at)
        elif producer is not None and producer.op_type == "Mul":
            todo += [(producer.inputs[1], (producer, 1)), (producer.inputs[0], (producer, 0))]
        else:
            leaves.append(None)
    return leaves if leaves.count(None) == 1 and len(leaves) > 1 else None


def _factor(mul: ir.Node, index: int) -> np.ndarray:
    """A constant factor, as `_mul_leaves` found it: a one-element array."""
    value = mul.inputs[index]
    tensor = None if value is None else ir.convenience.get_const_tensor(value)
    assert tensor is not None  # found constant by _mul_leaves
    return tensor.numpy()


def _size(mul: ir.Node, index: int) -> int:
    return int(_factor(mul, index).reshape(-1)[0])


def _retarget_data(
    sizes: list[int], data: Dims, data2: Dims, step: _Round, out: Dims
) -> tuple[list[int], dict[int, int]] | None:
    """`_retarget` for data whose wanted shape is `data2`; the target as it is where the
    data has its declared shape (padded back to it)."""
    if data == data2:
        return sizes, {}
    local = _local(data, data2)
    tiers = [{**step.seen, **local}, _joined(step.strided, step.seen, local)]
    return _retarget(sizes, data, data2, tiers, step, out)


def _whole_patches(node: ir.Node, sizes: list[int], data: Dims, data2: Dims) -> Dims | None:
    """A map (N, C, H, W) cut into patches of the target's (MobileViT's 2x2) that do not tile
    its wanted sides: its shape with the sides rounded up to whole patches, to which timm
    resizes it (bilinear) before the unfolding. None where the data is not such a map."""
    graph = node.graph
    if graph is None or graph.opset_imports.get("", 1) < 11 or len(data) != 4:
        return None  # Resize takes its scales as an input from opset 11
    patches = {s for s in sizes if 1 < s <= MAX_PATCH and data[2] % s == 0 and data[3] % s == 0}
    if data[:2] != data2[:2] or len(patches) != 1:
        return None
    (patch,) = patches
    whole = (*data2[:2], *(-(-n // patch) * patch for n in data2[2:]))
    return None if whole == data2 else whole


_LAYOUT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def _rebuilds(node: ir.Node, padded: _Padded) -> bool:
    """Whether a Reshape puts a padded map back together: its data is computed from the
    map (past the attention), not the map's patches or windows only rearranged."""
    data = node.inputs[0]
    return data in _downstream(padded.value, None) and data not in _downstream(
        padded.value, _LAYOUT
    )


def _downstream(value: ir.Value, ops: set[str] | None) -> set[ir.Value]:
    """The values computed from `value` through nodes of `ops` only (any where None)."""
    found, todo = {value}, [value]
    while todo:
        for use in todo.pop().uses():
            if ops is None or use.node.op_type in ops:
                fresh = [v for v in use.node.outputs if v not in found]
                found.update(fresh)
                todo += fresh
    return found


def _shown(target: list[int | None]) -> str:
    """A target as `inspect` prints it, ? where an entry is computed."""
    return "[" + ", ".join("?" if e is None else str(e) for e in target) + "]"


def _write_target(node: ir.Node, pieces: list[Piece], target: list[int | None]) -> None:
    """Give a Reshape `target`: its constant pieces new constants, its computed ones kept,
    joined by a new Concat where there are several."""
    if len(pieces) == 1:
        _replace_input(node, 1, np.array(target, np.int64))
        return
    graph = node.graph
    assert graph is not None  # a node of the model
    parts: list[ir.Value] = []
    at = 0
    for value, entries in pieces:
        part = target[at : at + len(entries)]
        at += len(entries)
        if None in entries or part == entries:
            parts.append(value)
        else:
            parts.append(_constant_input(node, "grid", np.array(part, np.int64)))
    joined = ir.node("Concat", parts, attributes={"axis": 0})
    graph.insert_before(node, joined)
    node.replace_input_with(1, joined.outputs[0])


def _constant_input(node: ir.Node, what: str, values: list[int] | np.ndarray) -> ir.Value:
    """A new initializer named after `node`, for an input of it or of a node written beside
    it: `values` as they are where an array, else as int64 sizes."""
    graph = node.graph
    assert graph is not None  # a node of the model
    array = values if isinstance(values, np.ndarray) else np.array(values, np.int64)
    return add_initializer(graph, _fresh(graph, f"{node.name}_{what}"), array)


def _scales(node: ir.Node, shape: Dims, shape2: Dims) -> tuple[None, ir.Value]:
    """Resize's roi (none) and the float32 scales that take `shape` to `shape2`: each the
    nearest float32 at or above the ratio, so that floor(size * scale) is the new size."""
    scales = []
    for n, m in zip(shape, shape2):
        scale = np.float32(m / n)
        scales.append(scale if float(scale) * n >= m else np.nextafter(scale, np.float32(np.inf)))
    return None, _constant_input(node, "scales", np.array(scales, np.float32))


def _written(op: str, inputs: list[ir.Value | None]) -> ir.Node:
    """A node of `op`; a Resize is bilinear over half-pixel centres, as torch's interpolate
    with align_corners=False, which timm's MobileViT resizes with."""
    linear = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    return ir.node(op, inputs, attributes=linear if op == "Resize" else {})


def _before(node: ir.Node, op: str, *inputs: ir.Value | None) -> ir.Value:
    """Run `op` on a node's data first (a Pad or a Resize); its output, now the data."""
    graph = node.graph
    assert graph is not None  # a node of the model
    written = _written(op, [node.inputs[0], *inputs])
    graph.insert_before(node, written)
    node.replace_input_with(0, written.outputs[0])
    return written.outputs[0]


def _put_back(node: ir.Node, padded: _Padded) -> None:
    """Resize or slice a Reshape's output, the padded map put back together, to the map's
    own shape, for every use and under its name."""
    out = node.outputs[0]
    uses = list(out.uses())
    if padded.resized:
        written = _written("Resize", [out, *_scales(node, padded.shape, padded.own)])
    else:
        axes = [k for k, (a, b) in enumerate(zip(padded.shape, padded.own)) if a != b]
        bounds = {"starts": [0] * len(axes), "ends": [padded.own[k] for k in axes], "axes": axes}
        written = _written(
            "Slice", [out, *(_constant_input(node, w, a) for w, a in bounds.items())]
        )
    graph = node.graph
    assert graph is not None  # a node of the model
    graph.insert_after(node, written)
    for use in uses:
        use.node.replace_input_with(use.idx, written.outputs[0])
    # the map put back keeps the name (a feature or a graph output may be the map)
    written.outputs[0].name, out.name = out.name, f"{out.name}_padded"
    written.outputs[0].type = out.type
    graph.outputs[:] = [written.outputs[0] if v is out else v for v in graph.outputs]


def _adapt_expand(node: ir.Node, step: _Round) -> str | None:
    """An Expand that broadcasts a size-1 axis to the declared token count, for an
    elementwise node whose other operand has the wanted one (`x / norm.expand_as(x)`)."""
    known, const = step.known(node.inputs[0]), _constant(node.inputs[1])
    if known is None or const is None:
        return None
    data = known[0]
    target = [int(e) for e in const.reshape(-1)]
    offset = len(target) - len(data)
    for use in node.outputs[0].uses():
        consumer = use.node
        if consumer.op_type not in _ELEMENTWISE or len(consumer.inputs) != 2:
            continue
        other = step.known(consumer.inputs[1 - use.idx])
        if other is None or len(other[0]) != len(target):
            continue
        o, o2 = other
        retarget = [
            o2[k] if e == o[k] and (k < offset or data[k - offset] == 1) else e
            for k, e in enumerate(target)
        ]
        if retarget == target:
            return None
        _replace_input(node, 1, np.array(retarget, np.int64))
        return f"Expand '{node.name}': shape {target} -> {retarget}"
    return None


def _adapt_operand(node: ir.Node, step: _Round) -> str | None:
    """An elementwise node's constant operand with an axis per position of the declared
    grid (a position table, a bias per pair of positions), for the other operand's wanted
    shape."""
    if len(node.inputs) != 2:
        return None
    for k in (0, 1):
        array, other = _constant(node.inputs[k]), step.known(node.inputs[1 - k])
        if array is None or other is None or other[0] == other[1]:
            continue
        adapted = _adapt_table(array, *other, step)
        if adapted is not None:
            table, how = adapted
            _replace_input(node, k, table)
            shapes = f"{list(array.shape)} -> {list(table.shape)}"
            return f"{node.op_type} '{node.name}': constant {how} {shapes}"
    return None


_ADAPTERS = {"Reshape": _adapt_reshape, "Expand": _adapt_expand}
_ADAPTERS.update({op: _adapt_operand for op in _ELEMENTWISE})


def _retarget(
    sizes: list[int], data: Dims, data2: Dims, tiers: list[Mapping], step: _Round, shape: Dims
) -> tuple[list[int], dict[int, int]] | None:
    """A Reshape's target sizes for its data's wanted shape `data2`, from the `sizes` it
    had for the declared `data`, and the data's axes to pad first, with their padded size.
    Row-major, the target splits and merges the data's sizes in runs whose products agree
    (`_runs`), a size that is a grid's count read as its two sides (`_sides`); each run of
    the target must hold its run of the data at the wanted size (`_run_choice`). A side
    split into windows that do not tile it is padded to whole windows, as timm's window
    attention pads at a size it was not traced at. A choice in which an entry holding the
    whole of a data size that changes changes with it (`_forced`), and in which a target
    whose declared output `shape` is a map takes the maps' sides for its own, comes first.
    None where a run has no such choice or more than one."""
    before, after, axes = _sides(data, data2, step)
    prefer = _map_sides(shape, step)
    runs = _runs(before, sizes)
    if runs is None:
        return None
    out: list[int] = []
    pads: dict[int, int] = {}
    for (start, stop), (first, last) in runs:
        wanted = math.prod(after[first:last])
        run = sizes[start:stop]
        alone = [k for k, size in enumerate(run) if size != 1]
        if len(alone) <= 1:  # one size, beside 1s (a batch of 1): it holds the run
            at = alone[0] if alone else 0
            chosen: list[int] | None = [wanted if k == at else 1 for k in range(len(run))]
        elif math.prod(run) == wanted:
            chosen = run
        else:
            # a split of one size ends in its patch or window, which keeps its size
            fixed = alone[-1] if last - first == 1 else None
            forced = _forced(run, before[first:last], after[first:last])
            local = {k - start: v for k, v in prefer.items() if start <= k < stop}
            chosen = _run_choice(run, wanted, tiers, fixed, forced, local)
            axis = axes[first]
            window = run[fixed] if fixed is not None else 0
            if chosen is None and window > MAX_PATCH and len(alone) == 2 and axis is not None:
                # the count of windows and the window (not a patch, which timm resizes to
                # whole patches instead): pad to whole windows
                pads[axis] = -(-wanted // window) * window
                chosen = [pads[axis] // window if k == alone[0] else e for k, e in enumerate(run)]
        if chosen is None:
            return None
        out += chosen
    return out, pads


def _sides(data: Dims, data2: Dims, step: _Round) -> tuple[list[int], list[int], list[int | None]]:
    """A value's declared and wanted sizes, a size that is a grid's count (no extra tokens)
    at both sizes as the grid's two sides, and the value's axis each size is (None for a
    count's sides)."""
    before: list[int] = []
    after: list[int] = []
    axes: list[int | None] = []
    for axis, (a, b) in enumerate(zip(data, data2)):
        pair = _grid_pair(a, b, step.declared, step.wanted) if a != b else None
        if pair is not None and pair[0][0] == 0 and min(*pair[0][1:], *pair[1][1:]) > 1:
            before += pair[0][1:]
            after += pair[1][1:]
            axes += [None, None]
        else:
            before.append(a)
            after.append(b)
            axes.append(axis)
    return before, after, axes


def _runs(data: list[int], target: list[int]) -> list[tuple[Size, Size]] | None:
    """The shortest runs of target sizes and of data sizes whose products agree, in order,
    as (start, stop) of each; None where they do not line up."""
    if math.prod(data) != math.prod(target):
        return None
    runs = []
    i = j = 0
    while i < len(target) or j < len(data):
        start, first = i, j
        a = target[i] if i < len(target) else 1
        b = data[j] if j < len(data) else 1
        i, j = i + 1, j + 1
        while a != b:
            if a < b and i < len(target):
                a, i = a * target[i], i + 1
            elif j < len(data):
                b, j = b * data[j], j + 1
            else:
                return None
        runs.append(((start, min(i, len(target))), (first, min(j, len(data)))))
    return runs


def _forced(run: list[int], data: list[int], data2: list[int]) -> set[int]:
    """The entries of a target run that hold, row-major, the whole of a data size that
    changes at the wanted size, so change with it: MobileViT's `[1, 64, 64, 4]` from
    `[512, 8, 2, 2]`, whose second 64 (the patches) holds the patch columns, 8."""
    forced: set[int] = set()
    for j, (a, b) in enumerate(zip(data, data2)):
        low = math.prod(data[j + 1 :])  # the data size's stride within the run
        if a != b:
            forced |= {
                k
                for k in range(len(run))
                if math.prod(run[k + 1 :]) <= low and low * a <= math.prod(run[k:])
            }
    return forced


def _map_sides(out: Dims, step: _Round) -> dict[int, int]:
    """For a declared output that is a map (N, C, H, W) following the image, the wanted
    height and width the maps show for its H and W, where they show one each; those of a
    padded map of its shape, where one is still to be put back."""
    if len(out) != 4 or not follows_image(out[2], out[3], step.declared):
        return {}
    for padded in step.padded:  # a padded map put back together has its padded sides
        if padded.declared == out:
            return {2: padded.shape[2], 3: padded.shape[3]}
    sides = {k: step.seen.get(out[k], ()) for k in (2, 3)}
    return {k: found[0] for k, found in sides.items() if len(found) == 1}


def _run_choice(
    sizes: list[int],
    wanted: int,
    tiers: list[Mapping],
    fixed: int | None,
    forced: set[int],
    prefer: dict[int, int],
) -> list[int] | None:
    """`sizes` with the fewest changed so that their product is `wanted`. A size changes to
    a wanted size a mapping offers for it, or, a multiple of a grid's side, to that multiple
    of the side's wanted size (a side merged with the channels, as MobileViT's patches
    are). Between choices that change as many: a direct change before a merged one, then
    the one from the earliest of `tiers` (the sizes the maps show before the image's over
    each stride), then the one changing the largest sizes (a patch or a window, small,
    keeps its size). Between direct changes or merged ones, one that changes every size at
    `forced` and gives the sizes `prefer` names comes before the tiers. The size at `fixed`
    never changes. None where that leaves more than one, or none.
    """
    choices = []
    for tier, mapping in enumerate(tiers):
        direct = [set(mapping.get(size, ())) - {size} for size in sizes]
        merged = [
            {
                size // side * new
                for side, news in mapping.items()
                if size % side == 0
                for new in news
            }
            - {size}
            for size in sizes
        ]
        both = [d | m for d, m in zip(direct, merged)]
        if fixed is not None:
            direct[fixed], both[fixed] = set(), set()
        choices += [(tier, 0, direct), (tier, 1, both)]
    for count in range(1, len(sizes) + 1):
        ranked: dict[tuple, list[list[int]]] = {}
        for tier, merge, options in choices:
            for key, trial in _fitting(sizes, wanted, options, count):
                unforced = sum(trial[k] == sizes[k] for k in forced)
                unpreferred = sum(trial[k] != size for k, size in prefer.items())
                rank = (merge, unforced + unpreferred, tier, tuple(-k for k in key))
                if all(trial not in found for found in ranked.values()):
                    ranked.setdefault(rank, []).append(trial)
        if ranked:
            best = ranked[min(ranked)]
            return best[0] if len(best) == 1 else None
    return None


def _fitting(
    sizes: list[int], wanted: int, options: list[set[int]], count: int
) -> list[tuple[list[int], list[int]]]:
    """Each way to change `count` of `sizes` to one of their `options` so that their
    product is `wanted`: (the changed sizes, largest first; the result)."""
    found: list[tuple[list[int], list[int]]] = []
    for changed in itertools.combinations(range(len(sizes)), count):
        for news in itertools.product(*(sorted(options[k]) for k in changed)):
            trial = list(sizes)
            for k, new in zip(changed, news):
                trial[k] = new
            key = sorted((sizes[k] for k in changed), reverse=True)
            if math.prod(trial) == wanted and all(trial != t for _, t in found):
                found.append((key, trial))
    return found


def _local(data: Dims, data2: Dims) -> Mapping:
    """The sizes that differ between a value's declared and wanted shapes, and the products
    of two neighbouring ones (a grid's height times its width)."""
    found: Mapping = {a: (b,) for a, b in zip(data, data2) if a != b}
    for k in range(len(data) - 1):
        if data[k] != data2[k] and data[k + 1] != data2[k + 1]:
            found[data[k] * data[k + 1]] = (data2[k] * data2[k + 1],)
    return {a: b for a, b in found.items() if a > MAX_PATCH}


def _grid_pair(old: int, new: int, declared: Size, wanted: Size) -> tuple[Grid, Grid] | None:
    """The grids of an axis holding `old` tokens at the declared size and `new` at the
    wanted one: the same extra tokens, over the same stride."""
    for leading, h, w in _square_grids(old, declared):
        for lead2, h2, w2 in _square_grids(new, wanted):
            same_stride = _same_stride(h, h2, declared[0], wanted[0])
            if lead2 == leading and same_stride and _same_stride(w, w2, declared[1], wanted[1]):
                return (leading, h, w), (lead2, h2, w2)
    return None


def _square_grids(tokens: int, image: Size) -> list[Grid]:
    """The grids `tokens` may be whose aspect is the image's within a rounding (a 28 that
    `follows_image` as 4x7 at 224x224 is a side, not a count)."""
    grids = token_grids(tokens, image)
    return [(lead, h, w) for lead, h, w in grids if abs(h - w * image[0] / image[1]) <= 1]


def _same_stride(side: int, side2: int, size: int, size2: int) -> bool:
    """Whether a grid `side` of an image `size` and `side2` of `size2` are one stride's: the
    same within a pixel, or one stride rounded up at both (LeViT's queries every other
    position of an odd grid)."""
    if abs(size / side - size2 / side2) <= 1:
        return True
    (low, high), (low2, high2) = _strides_to(side, size), _strides_to(side2, size2)
    return max(low, low2) < min(high, high2)


def _strides_to(side: int, size: int) -> tuple[float, float]:
    """The strides s, as an interval [low, high), for which ceil(size / s) is `side`."""
    return size / side, math.inf if side == 1 else size / (side - 1)


def _adapt_table(
    array: np.ndarray, o: Dims, o2: Dims, step: _Round
) -> tuple[np.ndarray, str] | None:
    """The constant operand `array` of an elementwise node, made to broadcast against the
    other operand's wanted shape `o2` (`o` at the declared size): a bias per pair of
    positions cropped to a smaller grid, else each axis per position resampled, and which
    of the two; None where no axis of it follows the grid."""
    offset = len(o) - array.ndim
    if offset < 0:
        return None
    axes = [k for k, n in enumerate(array.shape) if 1 < n == o[offset + k] != o2[offset + k]]
    if not axes:
        return None
    pairs = [_grid_pair(array.shape[k], o2[offset + k], step.declared, step.wanted) for k in axes]
    if any(pair is None for pair in pairs):
        resampled = _resample_map(array, axes, o2[offset:], step.declared)
        return None if resampled is None else (resampled, "resampled")
    grids = [pair for pair in pairs if pair is not None]
    crop = len(axes) == 2 and all(a[1] <= b[1] and a[2] <= b[2] for b, a in grids)
    for k, (before, after) in zip(axes, grids):
        array = (_crop if crop else _resample)(array, k, before, after)
    return array, "cropped" if crop else "resampled"


def _crop(array: np.ndarray, axis: int, old: Grid, new: Grid) -> np.ndarray:
    """The wanted grid's cells taken from the declared grid's along `axis`, row by row from
    its first: for a bias per pair of positions that depends on their offset alone, the
    wanted grid's bias."""
    leading, _, w = old
    _, h2, w2 = new
    cells = [leading + y * w + x for y in range(h2) for x in range(w2)]
    return np.take(array, list(range(leading)) + cells, axis=axis)


def _resample(array: np.ndarray, axis: int, old: Grid, new: Grid) -> np.ndarray:
    """A table with an entry per position along `axis`, resampled bicubically from the
    declared grid to the wanted one, its extra tokens kept."""
    leading, h, w = old
    _, h2, w2 = new
    moved = np.moveaxis(array, axis, -1)
    extra, cells = moved[..., :leading], moved[..., leading:]
    resized = _bicubic(cells.reshape(*cells.shape[:-1], h, w), (h2, w2))
    joined = np.concatenate([extra, resized.reshape(*cells.shape[:-1], h2 * w2)], axis=-1)
    return np.moveaxis(joined, -1, axis)


def _resample_map(
    array: np.ndarray, axes: list[int], o2: Dims, declared: Size
) -> np.ndarray | None:
    """A constant laid out as a map, its last two axes a grid that follows the image,
    resampled bicubically to the other operand's wanted height and width `o2[-2:]`."""
    if axes != [array.ndim - 2, array.ndim - 1]:
        return None
    if not follows_image(array.shape[-2], array.shape[-1], declared):
        return None
    return _bicubic(array, (o2[-2], o2[-1]))


def _bicubic(cells: np.ndarray, size: Size) -> np.ndarray:
    """(..., h, w) values resampled bicubically to (..., *size), as timm resamples position
    embeddings."""
    h, w = cells.shape[-2:]
    grid = torch.from_numpy(np.ascontiguousarray(cells.reshape(-1, 1, h, w), np.float32))
    resized = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
    return resized.reshape(*cells.shape[:-2], *size).numpy().astype(cells.dtype)


def _replace_input(node: ir.Node, index: int, array: np.ndarray) -> None:
    """Give `node` a new initializer holding `array` as its input `index`."""
    graph = node.graph
    assert graph is not None  # a node of the model
    old = node.inputs[index]
    base = f"{name_of(old) if old is not None else node.name}_grid"
    node.replace_input_with(index, add_initializer(graph, _fresh(graph, base), array))


def _fresh(graph: ir.Graph, base: str) -> str:
    """`base`, or `base` with the first number that makes it a new initializer's name."""
    name, k = base, 0
    while name in graph.initializers:
        k += 1
        name = f"{base}{k}"
    return name
