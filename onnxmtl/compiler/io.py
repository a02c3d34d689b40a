"""Save a supermodel to one file and load it back."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from onnxmtl.compiler.build import compile
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.errors import ConfigError, ModelFileError
from onnxmtl.io_utils import atomic_write
from onnxmtl.ir import load
from onnxmtl.tasks import Task

FORMAT = "onnxmtl.supermodel"
VERSION = 1


def save_supermodel(model: SuperModel, path: str | Path) -> None:
    """Write the normalised backbone, the tasks, the options and every weight and logit."""
    tasks = [t.to_dict() for t in model.tasks]
    state = {
        "format": FORMAT,
        "version": VERSION,
        "onnx": model.graph.to_proto().SerializeToString(),
        "source": model.graph.source,
        "tasks": tasks,
        "options": model.options,
        "calibration": model.calibration,
        "state_dict": model.state_dict(),
    }
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_supermodel(path: str | Path, tasks: list[Task] | None = None) -> SuperModel:
    """Rebuild a saved supermodel. Tasks with custom head or loss objects must be passed again."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: supermodel file not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: not a supermodel saved by onnxmtl compile ({type(exc).__name__})."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a supermodel saved by onnxmtl compile.")
    if state["version"] > VERSION:
        raise ModelFileError(
            f"{path}: saved by a newer onnxmtl (format {state['version']}); upgrade onnxmtl."
        )
    if tasks is None:
        tasks = [Task.from_dict(t, str(path)) for t in state["tasks"]]
    elif [t.name for t in tasks] != [t["name"] for t in state["tasks"]]:
        raise ConfigError(f"{path}: tasks must be {[t['name'] for t in state['tasks']]}.")
    graph = load(onnx.load_from_string(state["onnx"]), features=None)
    graph.source = state["source"]
    model = compile(graph, tasks, **state["options"])
    model.load_state_dict(state["state_dict"])
    model.calibration = state["calibration"]
    return model
