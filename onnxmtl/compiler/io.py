"""Save a supermodel to one file and load it back."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import onnx
import torch

from onnxmtl.compiler.build import compile
from onnxmtl.compiler.policy import Policy
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.errors import ConfigError, ModelFileError
from onnxmtl.io_utils import atomic_save
from onnxmtl.ir import load
from onnxmtl.tasks import Task

FORMAT = "onnxmtl.supermodel"
VERSION = 2  # 2: shared branches and skips keep BatchNorm statistics per task


def supermodel_state(model: SuperModel, state_dict: dict | None = None) -> dict:
    """Everything needed to rebuild `model`: the normalised backbone, the tasks, the options,
    its policy and its state dict (or the given slice of it)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "onnx": model.graph.to_proto().SerializeToString(),
        "source": model.graph.source,
        "tasks": [t.to_dict() for t in model.tasks],
        "options": model.options,
        "calibration": model.calibration,
        "policy": None if model.policy is None else asdict(model.policy),
        "state_dict": model.state_dict() if state_dict is None else state_dict,
    }


def save_supermodel(model: SuperModel, path: str | Path) -> None:
    """Write the normalised backbone, the tasks, the options, the policy and every weight and
    logit."""
    state = supermodel_state(model)
    atomic_save(Path(path), state)


def read_state(path: str | Path, fmt: str, what: str) -> dict:
    """The dict saved in `path` with format `fmt`, or a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: {what} file not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a {what} saved by onnxmtl ({type(exc).__name__})."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ModelFileError(f"{path}: not a {what} saved by onnxmtl.")
    if state["version"] > VERSION:
        raise ModelFileError(
            f"{path}: saved by a newer onnxmtl (format {state['version']}); upgrade onnxmtl."
        )
    return state


def supermodel_from_state(
    state: dict, path: str | Path, tasks: list[Task] | None = None, strict: bool = True
) -> SuperModel:
    """Rebuild a supermodel from `supermodel_state`'s dict (`path` names it in errors)."""
    if tasks is None:
        tasks = [Task.from_dict(t, str(path)) for t in state["tasks"]]
    elif [t.name for t in tasks] != [t["name"] for t in state["tasks"]]:
        raise ConfigError(f"{path}: tasks must be {[t['name'] for t in state['tasks']]}.")
    graph = load(onnx.load_from_string(state["onnx"]), features=None)
    graph.source = state["source"]
    model = compile(graph, tasks, **state["options"])
    weights = state["state_dict"]
    if state["version"] < 2:
        weights = _per_task_statistics(weights, model.state_dict())
    model.load_state_dict(weights, strict=strict)
    model.calibration = state["calibration"]
    return model


def load_supermodel(path: str | Path, tasks: list[Task] | None = None) -> SuperModel:
    """Rebuild a saved supermodel, carrying the policy it was saved with (none for a file saved
    before policies were). Tasks with custom head or loss objects must be passed again."""
    state = read_state(path, FORMAT, "supermodel")
    model = supermodel_from_state(state, path, tasks)
    saved = state.get("policy")
    model.set_policy(None if saved is None else Policy(**saved))
    return model


def _per_task_statistics(saved: dict, current: dict) -> dict:
    """A format-1 state for a format-2 model: the one set of statistics a shared branch kept
    for all its runs becomes every task's row."""
    out = dict(saved)
    for key, value in saved.items():
        want = current.get(key)
        if want is not None and want.dim() == value.dim() + 1 and want.shape[1:] == value.shape:
            out[key] = value.expand_as(want).clone()
    return out
