"""Static INT8 quantisation of an exported multi-task model with every task's accuracy
measured: onnxruntime's QDQ quantiser calibrated on training images, then, where a task
loses more than the tolerance, the nodes whose quantisation hurts most (by the library's
per-tensor signal-to-quantisation-noise ratio) kept in float, more of them each try, until
every task is within it."""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from onnxruntime.quantization import qdq_loss_debug as qdq_debug

from onnxmtl.data import MultiTaskDataset
from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import atomic_write
from onnxmtl.quantize.evaluate_onnx import Metrics, evaluate_onnx
from onnxmtl.tasks import Task, task_deltas
from onnxmtl.training.stream import collate

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")  # where the weights are
DEFAULT_TOLERANCE = 1.0  # each task's largest loss, in % (its metrics' mean relative change)


class _Images(CalibrationDataReader):
    """Batches of images for calibration (onnxruntime's reader protocol)."""

    def __init__(self, dataset: MultiTaskDataset, indices: np.ndarray, name: str, batch: int):
        self.batches: Iterator[dict[str, np.ndarray]] = (
            {name: collate(dataset, indices[i : i + batch])[0].numpy()}
            for i in range(0, len(indices), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@dataclass
class QuantizeResult:
    """The INT8 model written, the nodes kept in float, every task's metrics before and
    after on the evaluation split, and each try on the way."""

    path: str
    excluded: list[str]
    fp32: Metrics
    int8: Metrics
    deltas: dict[str, float]  # per task, INT8 against fp32, % (positive is better)
    tolerance: float
    within: bool
    tries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_model(
    model: str | Path,
    out: str | Path,
    calibration: MultiTaskDataset,
    evaluation: MultiTaskDataset,
    tasks: list[Task],
    calibration_indices: np.ndarray | None = None,
    evaluation_indices: np.ndarray | None = None,
    count: int = 64,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 32,
    max_tries: int = 6,
) -> QuantizeResult:
    """Write `model` (an exported fp32 ONNX file) as static INT8 (QDQ, per-channel weights)
    to `out`, calibrated on `count` images of `calibration` (at `calibration_indices`).
    Each task's metrics on `evaluation` are measured before and after; while a task loses
    more than `tolerance` % (the mean relative change of its metrics), the nodes that add the
    most quantisation noise, measured anew on each try, stay in float, 1, 2, 4, ... of them
    in all, at most `max_tries` times. Activations are calibrated on their 99.999th
    percentile (on the demo's searched model MinMax lost 2-3 times as much accuracy). The
    last try is written, within the tolerance or not (`within`)."""
    if not tolerance >= 0:
        raise ConfigError(f"tolerance {tolerance!r}: give a share of each task's metrics >= 0.")
    if count < 1:
        raise ConfigError(f"count {count!r}: calibrate on at least one image.")
    pool = np.arange(len(calibration)) if calibration_indices is None else calibration_indices
    images = np.asarray(pool)[:count]
    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    fp32 = evaluate_onnx(model, evaluation, tasks, evaluation_indices, batch_size)
    with _quiet_quantiser(), tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        except Exception:  # the pre-processing is an optimisation; quantise the file as it is
            prepared = Path(model)
        trial = Path(tmp) / "int8.onnx"

        def attempt(excluded: list[str]) -> tuple[Metrics, dict[str, float]]:
            quantize_static(
                str(prepared),
                str(trial),
                _Images(calibration, images, name, 8),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.Percentile,
            )
            int8 = evaluate_onnx(trial, evaluation, tasks, evaluation_indices, batch_size)
            return int8, task_deltas(int8, fp32)

        excluded: list[str] = []
        int8, deltas = attempt(excluded)
        tries = [{"excluded": 0, "deltas": deltas}]
        while not _within(deltas, tolerance) and len(tries) <= max_tries:
            ranking = noisiest_nodes(prepared, trial, calibration, images[:16], name)
            fresh = [n for n in ranking if n not in excluded]
            if not fresh:
                break
            excluded = excluded + fresh[: max(1, len(excluded))]  # 1, 2, 4, ... in float
            int8, deltas = attempt(excluded)
            tries.append({"excluded": len(excluded), "deltas": deltas})
        data = Path(trial).read_bytes()
    atomic_write(Path(out), lambda t: t.write_bytes(data))
    return QuantizeResult(
        str(out), excluded, fp32, int8, deltas, tolerance, _within(deltas, tolerance), tries
    )


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """The root logger at ERROR while onnxruntime's quantiser logs every node, and back to
    its level afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _within(deltas: dict[str, float], tolerance: float) -> bool:
    return all(d >= -tolerance or math.isnan(d) for d in deltas.values())


def noisiest_nodes(
    fp32: Path, int8: Path, dataset: MultiTaskDataset, indices: np.ndarray, name: str
) -> list[str]:
    """The quantised nodes of `fp32` (ops in `QUANTIZED_OPS`), worst first by how much
    quantisation noise each adds: the fall, from its input to its output, of the
    signal-to-noise ratio of the INT8 model's activations against the fp32 model's on a few
    images (onnxruntime's qdq_loss_debug). Ranking by the output's ratio alone would blame
    the deepest nodes for the noise the first ones made."""
    graph = onnx.load(str(fp32), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type in QUANTIZED_OPS]
    with tempfile.TemporaryDirectory() as tmp:
        activations = {}
        for label, path in (("fp32", fp32), ("int8", int8)):
            augmented = Path(tmp) / f"{label}.onnx"
            qdq_debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations[label] = qdq_debug.collect_activations(
                str(augmented), _Images(dataset, indices, name, 8)
            )
    matched = qdq_debug.create_activation_matching(activations["int8"], activations["fp32"])
    errors = qdq_debug.compute_activation_error(matched)

    def snr(tensor: str) -> float:
        return errors.get(tensor, {}).get("xmodel_err", math.inf)

    added = [(snr(n.input[0]) - snr(n.output[0]), n.name) for n in nodes if n.output[0] in errors]
    return [node for _, node in sorted(added, reverse=True)]
