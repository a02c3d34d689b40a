"""`export`: a multi-task model as one ONNX graph with one named output per task."""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from onnxmtl.derived import DerivedModel, one_module_per_run
from onnxmtl.errors import (
    ConfigError,
    DynamicBatchError,
    ExportMismatchError,
    ShapeError,
    first_line,
)
from onnxmtl.io_utils import atomic_write
from onnxmtl.ir.graph import cap_ir_version
from onnxmtl.lower.verify import max_diffs, nonfinite
from onnxmtl.runtime import ORT_ERRORS, quiet, session

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 20  # 20: the last opset of the TorchScript exporter
DEFAULT_RTOL = 1e-4
FP16_RTOL = 1e-2  # float16 keeps 11 significant bits; errors add up over a network
INPUT_NAME = "image"
POLICY_KEY = "onnxmtl.policy"
INPUT_KEY = "onnxmtl.input"  # the input contract: name, layout, size, preprocessing


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely onnxruntime reproduces PyTorch on it."""

    path: str
    opset: int
    ir_version: int
    outputs: list[str]
    input_shape: tuple[int, ...]  # the shape checked (batch 2, to exercise the dynamic batch)
    conv_nodes: int
    max_abs_diff: float
    max_rel_diff: float
    tolerance: float
    precision: str = "fp32"

    def describe(self) -> str:
        """One line: the file written, its outputs and format, and onnxruntime's difference."""
        return (
            f"wrote {self.path} ({self.precision}): outputs {', '.join(self.outputs)}; "
            f"opset {self.opset}, IR {self.ir_version}; {self.conv_nodes} Conv nodes; "
            f"onnxruntime vs PyTorch max diff {self.max_abs_diff:.3g} "
            f"({self.max_rel_diff:.3g} of the output scale, tolerance {self.tolerance:g})"
        )


class _ResizeFirst(nn.Module):
    """Resizes images to the backbone's size before the model, as training did
    (`onnxmtl.training.evaluate.fit_input`: bilinear, half-pixel centres), so that the file
    takes the images at the size they come in."""

    def __init__(self, inner: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.inner, self.size = inner, size

    def forward(self, x: torch.Tensor):
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.inner(x)


class _Half(nn.Module):
    """Computes in float16 between a float32 input and float32 outputs, so that callers
    feed and read the same tensors as from the float32 model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(o.float() for o in self.inner(x.half()))


def image_shape(model: DerivedModel, size: Sequence[int] | None = None) -> tuple[int, int, int]:
    """(C, H, W) of the model's input: the backbone's, or `size` (H, W) where it is symbolic."""
    dims = list(model.input_shape[1:])
    if size is not None:
        dims[-len(size) :] = list(size)
    if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ShapeError(
            f"the model's input size is {model.input_shape}; pass the image size (H, W) to "
            "export (CLI: --input-size H,W)."
        )
    return tuple(dims)


def export(
    model: DerivedModel,
    path: str | Path,
    input_size: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float | None = None,
    seed: int = 0,
    batch: int | None = None,
    fp16: bool = False,
    image_size: Sequence[int] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> ExportReport:
    """Write `model` to `path` as one ONNX graph: input 'image' (a dynamic batch, or the
    fixed `batch`), one output per task named after it, the policy in the metadata. The file
    is checked with the ONNX checker and onnxruntime must match PyTorch (float32) within
    `tolerance` (max difference over the largest output magnitude; default 1e-4, or 1e-2
    with `fp16`) on a seeded batch (of 2 when the batch is dynamic, traced with 1), else
    nothing is written. `fp16` computes in float16 between a float32 input and float32
    outputs (for GPUs; half the weight bytes). `image_size` (H, W): the size of the images the
    model is to take where it differs from the backbone's (the size a run trained on); the
    graph then resizes them first, as training did. The metadata states the input contract
    (`INPUT_KEY`: name, layout, shape, and the `preprocessing` the images need: a
    'description' in words and, where known, 'scale', 'mean' and 'std' as numbers)."""
    if not isinstance(model, DerivedModel):
        raise ConfigError(
            f"export takes a DerivedModel (from onnxmtl.derive), got {type(model).__name__}."
        )
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset {opset!r}: export writes opsets {MIN_OPSET} to {MAX_OPSET} (torch's "
            f"TorchScript exporter); the default is {DEFAULT_OPSET}."
        )
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"batch {batch!r}: give a batch size >= 1, or none for a dynamic one.")
    if tolerance is not None and not tolerance > 0:
        raise ConfigError(f"tolerance {tolerance!r}: give a number > 0.")
    path = Path(path)
    shape = image_shape(model, input_size)
    if image_size is not None:
        if len(image_size) != 2 or not all(isinstance(d, int) and d > 0 for d in image_size):
            raise ConfigError(f"image_size {image_size!r}: give (H, W), two sizes > 0.")
        backbone = (shape[1], shape[2])
        shape = (shape[0], int(image_size[0]), int(image_size[1]))
    names = model.task_names
    was_training = model.training
    model.eval()
    size = batch or 2
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((size, *shape)).astype("f4"))
    try:
        wrapper: nn.Module = one_module_per_run(model).eval()
        fed = x
        if image_size is not None and tuple(image_size) != backbone:
            wrapper = _ResizeFirst(wrapper, backbone).eval()
            fed = F.interpolate(x, size=backbone, mode="bilinear", align_corners=False)
        with torch.no_grad():
            outputs = model(fed)
        expected = [outputs[name].numpy() for name in names]
        if fp16:
            wrapper = _Half(copy.deepcopy(wrapper))
        axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if batch is None else None
        proto = trace_to_onnx(wrapper, [x if batch else x[:1]], [INPUT_NAME], names, opset, axes)
    finally:
        model.train(was_training)
    cap_ir_version(proto)
    onnx.helper.set_model_props(
        proto,
        {
            POLICY_KEY: json.dumps(asdict(model.policy)),
            "onnxmtl.tasks": json.dumps([t.to_dict() for t in model.tasks]),
            "onnxmtl.precision": "fp16" if fp16 else "fp32",
            INPUT_KEY: json.dumps(
                {
                    "name": INPUT_NAME,
                    "layout": "NCHW",
                    "dtype": "float32",
                    "shape": ["batch" if batch is None else batch, *shape],
                    "preprocessing": preprocessing
                    or {"description": "as the images the model was trained on"},
                }
            ),
        },
    )
    onnx.checker.check_model(proto, full_check=True)
    fixed_hint = " export with a fixed batch (batch=N, CLI --batch N)."
    try:
        got = session(proto, ["CPUExecutionProvider"]).run(names, {INPUT_NAME: x.numpy()}, quiet())
    except ORT_ERRORS as exc:
        if batch is None:
            raise DynamicBatchError(
                f"{path}: onnxruntime fails on a batch of {size} ({first_line(exc)}); nothing "
                f"written. The backbone's batch size does not stay dynamic;{fixed_hint}"
            ) from exc
        raise ExportMismatchError(
            f"{path}: onnxruntime fails on the export ({first_line(exc)}); nothing written."
        ) from exc
    bad_torch, bad_ort = sum(map(nonfinite, expected)), sum(map(nonfinite, got))
    if bad_torch or bad_ort:
        raise ExportMismatchError(
            f"{path}: the outputs hold NaN/inf values (PyTorch {bad_torch}, onnxruntime "
            f"{bad_ort}) on a seeded batch of {size}; nothing written. Check the model's "
            "weights (a training run that diverged?)."
        )
    max_abs, max_rel = max_diffs(expected, got)
    if tolerance is None:
        tolerance = FP16_RTOL if fp16 else DEFAULT_RTOL
    if max_rel > tolerance:
        said = (
            f"{path}: onnxruntime differs from PyTorch by {max_rel:.3g} of the output scale on "
            f"a batch of {size} (tolerance {tolerance:g}); nothing written."
        )
        if batch is None:
            raise DynamicBatchError(
                f"{said} The backbone's batch size does not stay dynamic;{fixed_hint}"
            )
        raise ExportMismatchError(said)
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))
    convs = sum(n.op_type == "Conv" for n in proto.graph.node)
    return ExportReport(
        str(path),
        opset,
        proto.ir_version,
        names,
        tuple(x.shape),
        convs,
        max_abs,
        max_rel,
        tolerance,
        "fp16" if fp16 else "fp32",
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an ONNX file (for one export wrote: its policy, tasks, precision and
    input contract), read without its external weights."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def trace_to_onnx(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_axes: dict | None = None,
) -> onnx.ModelProto:
    """`module` (in the mode it is in) traced on `inputs` by torch's legacy exporter, with
    constants folded; value_info dropped (stale at other batch sizes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            tuple(inputs),
            buffer,  # type: ignore[arg-type]  # torch types `f` as a path; the exporter takes files too
            input_names=list(input_names),
            output_names=list(output_names) if output_names else None,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.graph.value_info[:]
    return proto
