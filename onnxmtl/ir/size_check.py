"""A graph loaded at another input size than its file declares, run once in onnxruntime:
shape inference passes Reshape targets that hold the declared size's patch grid or token
count, and only a run finds them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxmtl.errors import ShapeError, first_line
from onnxmtl.ir.batch import CHECK_BATCH
from onnxmtl.ir.graph import runnable_proto
from onnxmtl.ir.values import dims_of, name_of
from onnxmtl.runtime import ORT_ERRORS, quiet, session

_NODE = re.compile(r"node\. Name:'([^']*)'")


def check_runs_at_size(model: ir.Model, image: ir.Value, declared: Sequence, label: str) -> None:
    """Raise a ShapeError naming the node or output at fault unless `model` runs in
    onnxruntime on CHECK_BATCH images of the size its `image` input now has, every output
    leading with that batch (a -1 that took in the patches a held grid left over would run,
    and hand back more rows than images); `declared` is the size the file gave."""
    proto = runnable_proto(model)
    sizes = dims_of(image)[1:]  # fix_input_shape made C, H and W concrete
    shape = [CHECK_BATCH, *(d for d in sizes if isinstance(d, int))]
    if len(shape) != len(sizes) + 1:
        raise ShapeError(f"{label}: input '{image.name}' has a symbolic size {list(sizes)}.")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    wanted = "x".join(str(d) for d in shape[2:])
    held = "x".join(str(d) for d in declared[2:])
    fix = f"load it at {held}, or re-export it at {wanted}"
    if not all(isinstance(d, int) for d in declared[2:]):
        fix = "load it at a size the model was built for"
    said = f"{label}: does not run at {wanted} (it declares {held})"
    held_sizes = "its sizes held for the declared input (a patch grid or token count)"
    try:
        sess = session(proto, ["CPUExecutionProvider"])
        outputs = sess.run(None, {name_of(image): x}, quiet())
    except ORT_ERRORS as exc:
        message = first_line(exc)
        found = _NODE.search(message)
        why = message.split(" was false. ")[-1]  # onnxruntime's reason, not its source line
        node = f"node '{found.group(1)}'" if found else "a node"
        raise ShapeError(
            f"{said}: {node} fails in onnxruntime, {held_sizes}: {why}; {fix}."
        ) from exc
    for info, out in zip(sess.get_outputs(), outputs):
        if out.ndim == 0 or out.shape[0] != CHECK_BATCH:
            rows = out.shape[0] if out.ndim else "no"
            raise ShapeError(
                f"{said}: output '{info.name}' gives {rows} rows for {CHECK_BATCH} images, "
                f"{held_sizes}; {fix}."
            )
