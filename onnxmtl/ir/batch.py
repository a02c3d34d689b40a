"""Fixed-batch ONNX files: make a static batch symbolic, and prove the rewrite right.

Many published files were exported with a batch of 1 (older ones with 64) and no dynamic axis,
so their Reshape targets carry that batch as a constant (`[1, 128, 14, 14]`, `[64, -1]` in
front of a classifier, or merged with the heads of an attention block: `[64, 2, 4]` = length,
batch*heads, head size). Training needs batches of any size, so the load stage makes the batch
symbolic where it can show, on onnxruntime, that the rewritten graph on a batch equals the
original file run on the batches it was made for; elsewhere it stops with one line saying how
to re-export the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir

from onnxmtl.errors import FixedBatchError, first_line
from onnxmtl.ir.graph import cap_ir_version, runnable_proto
from onnxmtl.ir.normalize import add_initializer
from onnxmtl.ir.reference import forget_shapes, graph_input
from onnxmtl.ir.shapes import shape_only_proto
from onnxmtl.ir.values import dims_of, name_of, node_name, required_input
from onnxmtl.runtime import ORT_ERRORS, quiet, session

BATCH_SYMBOL = "N"
PROBE_BATCH = 97  # a factor no real size holds, so the dims the batch scales stand out
CHECK_BATCH = 2
CHECK_RTOL = 1e-4
MAX_PROBES = 512  # candidate targets tried before giving up
MAX_CHECKS = 8  # complete rewrites checked on onnxruntime before giving up
FIX = (
    "re-export the model with a dynamic batch axis (torch.onnx.export(..., dynamic_axes="
    "{'input': {0: 'N'}})); see 'Fixed-batch files' in docs/backbones.md"
)
Shapes = dict[str, tuple | None]  # every value's inferred shape (None: unknown)
Probes = tuple[Shapes, Shapes]  # at the file's batch, at PROBE_BATCH times it


class MakeBatchDynamicPass(ir.passes.InPlacePass):
    """Point every Reshape whose constant target holds the file's `batch` at the batch, leaving
    the model's other sizes as they are (the image input's batch is already symbolic).

    `rewritten` lists the Reshape nodes whose target changed, for messages. `accept` judges a
    complete rewrite (every output carries the batch first, the shapes agree); where it says
    no, the search goes on to the next place the batch may go.
    """

    def __init__(
        self,
        input_name: str,
        label: str,
        batch: int = 1,
        accept: Callable[[ir.Model, list[str]], bool] | None = None,
    ):
        super().__init__()
        self.input_name = input_name
        self.label = label
        self.batch = batch
        self.accept = accept or (lambda model, rewritten: True)
        self.rewritten: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        value = next(v for v in model.graph.inputs if v.name == self.input_name)
        self.first: str | None = None
        self.lost: str | None = None
        # First every rewrite must leave the shapes consistent; then a rewrite may wait for a
        # later one (a branch that joins another before its own Reshape frees the batch).
        found = False
        for self.defer in (False, True):
            self.budget = MAX_PROBES
            found = self._fix_from_here(model, value, self._probes(model, value))
            if found:
                break
        if not found:
            where = (
                f"no rewrite of the Reshape targets from node '{self.first}' on"
                if self.first
                else f"no Reshape holds it, yet {self.lost or 'an output'} loses it, and nothing"
            )
            raise FixedBatchError(
                f"{self.label}: fixed batch of {self.batch} that cannot be made dynamic: {where} "
                f"keeps the batch first in every output; {FIX}.",
                node=self.first or self.lost,
            )
        return ir.passes.PassResult(model, modified=bool(self.rewritten))

    def _fix_from_here(self, model: ir.Model, value: ir.Value, probes: Probes) -> bool:
        """Repoint the first Reshape that drops the batch or whose -1 takes it in, trying
        each place the batch may go (depth first), until every output carries the batch in its
        first axis and `accept` takes the result. `probes` are the model's shapes as they are
        now (`_probes`)."""
        one, many = probes
        node = next(
            (
                n
                for n in model.graph
                if _drops_batch(n, one, many)
                or _absorbs_batch(n, one, many, self.batch, self.rewritten)
            ),
            None,
        )
        if node is None:  # outputs of unknown shape are left to the onnxruntime check
            kept = all(
                _keeps_batch(one.get(name_of(o)), many.get(name_of(o))) for o in model.graph.outputs
            )
            if not kept:
                self.lost = self.lost or _batch_lost_at(model, one, many)
            return kept and self.accept(model, self.rewritten)
        if not self.rewritten:
            self.first = node_name(node)
        if node_name(node) in self.rewritten:  # its rewrite on this path did not free the batch
            return False
        try:
            positions = _batch_positions(node, one, many, self.label, self.batch)
        except FixedBatchError:  # said at once where it is the first Reshape tried
            if not self.rewritten:
                raise
            return False
        original = required_input(node, 1)
        self.rewritten.append(node_name(node))
        out = one[name_of(node.outputs[0])]
        assert out is not None  # _drops_batch found it known
        for position in positions:
            self.budget -= 1
            if self.budget < 0:
                return False
            _set_target(model.graph, node, out, position)
            consistent = self._consistent(model, value)
            if consistent is not None and self._fix_from_here(model, value, consistent):
                return True
            rejected = required_input(node, 1)
            node.replace_input_with(1, original)
            model.graph.initializers.pop(name_of(rejected))
        self.rewritten.pop()
        return False

    def _probes(self, model: ir.Model, value: ir.Value) -> Probes:
        """Every value's shape at the file's batch and at PROBE_BATCH times it."""
        one = _probe_shapes(model, value, self.batch)
        return one, _probe_shapes(model, value, PROBE_BATCH * self.batch)

    def _consistent(self, model: ir.Model, value: ir.Value) -> Probes | None:
        """The model's `_probes` where the shapes inferred at a grown batch agree everywhere,
        or (`defer`) disagree only while a Reshape still holds the batch as a constant or takes
        it into its -1 (a branch it feeds keeps the file's batch until its own rewrite, which
        comes next); None where they do not."""
        try:
            many = _probe_shapes(model, value, PROBE_BATCH * self.batch, strict=True)
        except onnx.shape_inference.InferenceError:
            if not self.defer:
                return None
            one, many = self._probes(model, value)
            waits = any(
                _drops_batch(n, one, many)
                or _absorbs_batch(n, one, many, self.batch, self.rewritten)
                for n in model.graph
            )
            return (one, many) if waits else None
        return _probe_shapes(model, value, self.batch), many


def _keeps_batch(one: tuple | None, many: tuple | None) -> bool:
    """Whether an output of shape `one` at the file's batch (`many` at PROBE_BATCH times it)
    carries the batch in its first axis; True where either shape is unknown."""
    return not one or not many or many[0] == PROBE_BATCH * one[0] > 0


def _probe_shapes(model: ir.Model, value: ir.Value, batch: int, strict: bool = False) -> Shapes:
    """Every value's inferred shape with the image input's batch set to `batch`; `strict`
    raises onnx's InferenceError where two shapes disagree."""
    saved = value.shape
    value.shape = ir.Shape([batch, *dims_of(value)[1:]])
    try:
        proto = forget_shapes(shape_only_proto(model))
    finally:
        value.shape = saved
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=strict, data_prop=True)
    shapes: Shapes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        typed = info.type.tensor_type if info.type.HasField("tensor_type") else None
        dims = typed.shape.dim if typed is not None and typed.HasField("shape") else None
        known = dims is not None and all(d.HasField("dim_value") for d in dims)
        shapes[info.name] = tuple(d.dim_value for d in dims) if dims is not None and known else None
    return shapes


def _drops_batch(node: ir.Node, one: dict, many: dict) -> bool:
    """A Reshape whose input grows with the batch but whose constant target does not."""
    if node.op_type != "Reshape" or required_input(node, 1).const_value is None:
        return False
    data, out = name_of(required_input(node, 0)), name_of(node.outputs[0])
    before, after, size = one.get(data), many.get(data), one.get(out)
    if before is None or after is None or size is None or math.prod(size) == 0:
        return False
    target = many.get(out) or size  # unknown where onnx sees the sizes disagree
    return math.prod(after) != math.prod(before) and math.prod(target) == math.prod(size)


def _absorbs_batch(node: ir.Node, one: dict, many: dict, batch: int, settled: list[str]) -> bool:
    """A Reshape whose constant target starts with the file's batch and has a -1 that takes
    the batch in (`[1, -1]` in front of a classifier, `[1, tokens, heads, -1]` in an attention
    block, `[1, -1, C]` after a norm over batch*tokens), or any -1 where the batch leads its
    input: its input grows with the batch, and its output too, but not in its first axis. A
    -1 that may hold the batch where another axis may too is open to the search once, unless
    it is among the `settled` nodes this search has rewritten already."""
    target = required_input(node, 1).const_value if node.op_type == "Reshape" else None
    data, out = name_of(required_input(node, 0)), name_of(node.outputs[0])
    before, after = one.get(data), many.get(data)
    size, grown = one.get(out), many.get(out)
    if target is None or before is None or after is None or size is None or grown is None:
        return False
    dims = target.numpy().tolist()
    grows = math.prod(after) != math.prod(before)
    if not grows or -1 not in dims or _keeps_batch(size, grown):
        return False
    if dims[0] == batch or _batch_alone_in_front(before, after, batch):
        return True
    if node_name(node) in settled:
        return False
    return _leads_into_a_minus_one(dims, before, after, size)


def _moved_axes(before: tuple, after: tuple) -> list[int]:
    """The axes where a value's shape at the file's batch (`before`) and at PROBE_BATCH times
    it (`after`) differ: those that carry the batch."""
    return [j for j, (a, b) in enumerate(zip(before, after)) if a != b]


def _batch_alone_in_front(before: tuple, after: tuple, batch: int) -> bool:
    """Whether a value of shape `before` at the file's `batch` (`after` at PROBE_BATCH times
    it) holds the batch alone in an axis with nothing in front of it: a Reshape keeps it
    outermost, so the batch must start the first axis of its output (MobileViT's
    `[patches, tokens, -1]` at batch 1 is batch*patches, not tokens*batch)."""
    moved = _moved_axes(before, after)
    return len(moved) == 1 and math.prod(before[: moved[0] + 1]) == batch


def _leads_into_a_minus_one(dims: list[int], before: tuple, after: tuple, size: tuple) -> bool:
    """Whether the input holds the batch in its first axis, merged with other sizes, and the
    -1 need not be where the batch goes. The shapes cannot say whether the batch is outer or
    inner there: TinyViT's `[windows, tokens, heads, -1]` at batch 1 takes batch*windows into
    the head size, EfficientViT's `[windows, -1, 7, 7]` takes it into the channels, while the
    -1 of `[length, -1, width]` after length*batch tokens (seq-first attention) is right."""
    moved = _moved_axes(before, after)
    if moved != [0] or after[0] != PROBE_BATCH * before[0]:
        return False
    return _target_axes(before, after, size) != [dims.index(-1)]


def _batch_lost_at(model: ir.Model, one: dict, many: dict) -> str | None:
    """'<op> node <name>': the first node (not a shape query) whose input grows with the batch
    but whose output does not, where the file's batch is held other than in a Reshape
    target."""
    for node in model.graph:
        if node.op_type in ("Shape", "Size") or not node.outputs:
            continue
        out = node.outputs[0].name
        grows = any(
            i is not None and one.get(i.name) and many.get(i.name) and one[i.name] != many[i.name]
            for i in node.inputs
        )
        if grows and (many.get(out) is None or one.get(out) == many.get(out)):
            return f"{node.op_type} node '{node.name}'"
    return None


def _batch_positions(node: ir.Node, one: dict, many: dict, label: str, batch: int) -> list[int]:
    """The target axes the batch may join, most likely first.

    The batch sits between the per-image elements in front of it and those behind it: the
    start of one target axis (batch-major, as in `[1, C, H, W]` or batch*heads) or the end of
    the one before (as in length*batch); in front of the input axis that carries it or, where
    an earlier rewrite put it last in that axis, behind it.
    """
    data = name_of(required_input(node, 0))
    before, after, out = one[data], many[data], one[name_of(node.outputs[0])]
    moved = _moved_axes(before, after)
    if len(moved) != 1 or after[moved[0]] != PROBE_BATCH * before[moved[0]]:
        raise FixedBatchError(
            _unsafe(label, batch, node, "its input carries the batch in no one axis")
        )
    positions = _target_axes(before, after, out)
    own = required_input(node, 1).const_value
    dims = own.numpy().tolist() if own is not None else []
    if -1 in dims and dims.index(-1) in positions:  # the file's own choice first
        positions.remove(dims.index(-1))
        positions.insert(0, dims.index(-1))
    if not positions:
        raise FixedBatchError(
            _unsafe(label, batch, node, "no axis of its target can carry the batch")
        )
    return positions


def _target_axes(before: tuple, after: tuple, out: tuple) -> list[int]:
    """The axes of a Reshape's output `out` that may carry the batch its input holds in the
    one axis where `before` and `after` differ, most likely first."""
    axis = _moved_axes(before, after)[0]
    positions: list[int] = []
    for outer in (math.prod(before[:axis]), math.prod(before[: axis + 1])):
        starts = [i for i in range(len(out)) if math.prod(out[:i]) == outer]
        ends = [i for i in range(len(out)) if math.prod(out[: i + 1]) == outer]
        positions += [i for i in starts[:1] + ends[-1:] if i not in positions]
    return positions


def _set_target(graph: ir.Graph, node: ir.Node, out: tuple, position: int) -> None:
    new = list(out)  # the sizes at the file's batch, none 0: `allowzero` reads them the same
    new[position] = -1
    name = f"{node.name}_batch_shape_{position}"
    node.replace_input_with(1, add_initializer(graph, name, np.array(new, np.int64)))


def _unsafe(label: str, batch: int, node: ir.Node, why: str) -> str:
    return (
        f"{label}: fixed batch of {batch} that cannot be made dynamic: {node.op_type} node "
        f"'{node.name}' holds it as a constant and {why}; {FIX}."
    )


def make_batch_dynamic(
    model: ir.Model, value: ir.Value, original: onnx.ModelProto, label: str
) -> None:
    """Point the fixed-batch constants of `model` (folded, its image input `value` made
    symbolic) at the batch, and check the result against the `original` file on onnxruntime."""
    name = name_of(value)
    batch = graph_input(original, name).type.tensor_type.shape.dim[0].dim_value
    cap_ir_version(original)  # as runnable_proto serves the rewritten graph
    refused: list[FixedBatchError] = []

    def accept(candidate: ir.Model, rewrites: list[str]) -> bool:
        if len(refused) >= MAX_CHECKS:
            return False
        rewritten = forget_shapes(runnable_proto(candidate))
        try:
            check_batch_rewrite(original, rewritten, name, label, rewrites)
        except FixedBatchError as exc:
            refused.append(exc)
            return False
        return True

    try:
        MakeBatchDynamicPass(name, label, batch, accept)(model)
    except FixedBatchError:
        if refused:  # the first complete rewrite, and why onnxruntime refused it
            raise refused[0] from None
        raise


def check_batch_rewrite(
    original: onnx.ModelProto,
    rewritten: onnx.ModelProto,
    input_name: str,
    label: str,
    rewrites: list[str],
) -> None:
    """Raise FixedBatchError unless `rewritten` on a random batch of CHECK_BATCH equals
    `original` run on batches of its own fixed size holding those images first (each image
    alone, for a batch of 1), every output with the batch as its leading axis."""
    shape = [d.dim_value for d in graph_input(original, input_name).type.tensor_type.shape.dim]
    batch = shape[0]
    runs = -(-CHECK_BATCH // batch)
    pool = np.random.default_rng(0).standard_normal([runs * batch, *shape[1:]])
    pool = pool.astype(np.float32)
    x = pool[:CHECK_BATCH]
    where = f" (rewritten: {', '.join(rewrites[:3])})" if rewrites else ""
    try:
        reference = session(original, ["CPUExecutionProvider"])
    except ORT_ERRORS as exc:
        raise FixedBatchError(
            f"{label}: onnxruntime cannot open the file, so no rewrite of its fixed batch of "
            f"{batch} can be checked ({first_line(exc)}); {FIX}."
        ) from exc
    names = [o.name for o in reference.get_outputs()]
    try:
        chunks = [
            reference.run(names, {input_name: pool[i * batch : (i + 1) * batch]}, quiet())
            for i in range(runs)
        ]
    except ORT_ERRORS as exc:
        raise FixedBatchError(
            f"{label}: the file itself fails on onnxruntime at input {list(pool.shape[1:])}, so "
            f"no rewrite of its batch can be checked ({first_line(exc)}); load it at its "
            "declared size, or cut it at its features (a classifier sized for the declared "
            "input cannot run at another)."
        ) from exc
    try:
        got = session(rewritten, ["CPUExecutionProvider"]).run(names, {input_name: x}, quiet())
    except ORT_ERRORS as exc:
        why = f"onnxruntime fails on a batch of {CHECK_BATCH}{where}: {first_line(exc)}"
        raise FixedBatchError(_failed(label, batch, why)) from exc
    for k, name in enumerate(names):
        parts = [c[k] for c in chunks]
        if parts[0].ndim == 0 or parts[0].shape[0] != batch or got[k].shape[0] != CHECK_BATCH:
            raise FixedBatchError(
                _failed(
                    label,
                    batch,
                    f"output '{name}' does not carry the batch in its first axis{where}",
                )
            )
        expected = np.concatenate(parts)[:CHECK_BATCH]
        scale = max(float(np.max(np.abs(expected))), 1e-12) if expected.size else 1.0
        if got[k].shape != expected.shape or np.max(np.abs(got[k] - expected)) > CHECK_RTOL * scale:
            raise FixedBatchError(
                _failed(
                    label,
                    batch,
                    f"output '{name}' on a batch of {CHECK_BATCH} differs from the file run on "
                    f"batches of {batch}{where}",
                )
            )


def _failed(label: str, batch: int, why: str) -> str:
    return f"{label}: fixed batch of {batch} that cannot be made dynamic: {why}; {FIX}."
