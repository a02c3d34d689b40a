"""`Task`: what one output of the multi-task model predicts, and how it is trained and scored."""

from __future__ import annotations

import keyword
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onnxmtl.errors import ConfigError, shown
from onnxmtl.io_utils import read_yaml

DENSE_KINDS = ("segmentation", "depth", "normals")
KINDS = (*DENSE_KINDS, "classification", "multilabel", "regression")
_ALIASES = {
    "semantic_segmentation": "segmentation",
    "seg": "segmentation",
    "normal": "normals",
    "surface_normals": "normals",
    "multi_label": "multilabel",
    "multi-label": "multilabel",
    "class": "classification",
}
_FIXED_OUTPUTS = {"depth": 1, "normals": 3}
RESERVED_NAMES = ("image",)  # the exported ONNX model's input (onnxmtl.exporter.INPUT_NAME)
_FIELDS = ("name", "kind", "num_outputs", "head", "loss", "weight", "ignore_index")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HeadFactory = Callable[["Task", int], nn.Module]  # (task, feature channels) -> a fresh head


@dataclass
class Task:
    """One task: its name, kind, output channels, head, loss and loss weight.

    `head` is a registered head name ('aspp', 'conv', 'conv1x1', 'linear' or one added with
    `register_head`), a factory (task, in_channels) -> nn.Module, or an nn.Module mapping the
    backbone feature map to the task output (each compiled model gets its own deep copy);
    None picks the kind's default.
    `loss` is a registered loss name or a callable (prediction, target) -> scalar.
    """

    name: str
    kind: str
    num_outputs: int | None = None  # classes or channels; fixed for depth (1) and normals (3)
    head: str | HeadFactory | nn.Module | None = None
    loss: str | LossFn | None = None
    weight: float = 1.0  # static weight of this task's loss in the summed objective
    ignore_index: int = 255  # segmentation label that is neither trained nor scored

    @property
    def outputs(self) -> int:
        """`num_outputs`, which construction always sets (to the kind's fixed count where it
        has one)."""
        assert self.num_outputs is not None
        return self.num_outputs

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(
                f"task name {shown(self.name)} is not a valid identifier; use letters, digits "
                "and _ (it names the model output)."
            )
        if keyword.iskeyword(self.name):
            raise ConfigError(
                f"task name {shown(self.name)} is a Python keyword, which the derived model's "
                "generated code cannot use as a name; rename the task (e.g. 'cls')."
            )
        if self.name in RESERVED_NAMES:
            raise ConfigError(
                f"task name {shown(self.name)} is the exported model's input name; rename the task."
            )
        kind = _ALIASES.get(str(self.kind).lower(), str(self.kind).lower())
        if kind not in KINDS:
            raise ConfigError(
                f"task '{self.name}': unknown kind {shown(self.kind)}; "
                f"expected one of {', '.join(KINDS)}."
            )
        self.kind = kind
        fixed = _FIXED_OUTPUTS.get(kind)
        if self.num_outputs is None:
            if fixed is None:
                raise ConfigError(
                    f"task '{self.name}' ({kind}) needs num_outputs (the number of classes or "
                    "values it predicts)."
                )
            self.num_outputs = fixed
        if isinstance(self.num_outputs, bool) or not isinstance(self.num_outputs, int):
            raise ConfigError(f"task '{self.name}': num_outputs must be an integer.")
        if fixed is not None and self.num_outputs != fixed:
            raise ConfigError(
                f"task '{self.name}' ({kind}) predicts {fixed} channel(s); "
                f"num_outputs={self.num_outputs} is not allowed."
            )
        if self.num_outputs < 1 or (kind == "segmentation" and self.num_outputs < 2):
            raise ConfigError(f"task '{self.name}': num_outputs={self.num_outputs} is too small.")
        expected = {"head": "a factory or a module", "loss": "a callable"}
        for key, what in expected.items():
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) or callable(value)):
                raise ConfigError(
                    f"task '{self.name}': {key}={shown(value)} is neither a {key} name nor {what}."
                )
        if not isinstance(self.weight, int | float) or self.weight < 0:
            raise ConfigError(f"task '{self.name}': weight must be a number >= 0.")
        self.weight = float(self.weight)

    @property
    def dense(self) -> bool:
        """Whether the task predicts a map at input resolution."""
        return self.kind in DENSE_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The task as YAML-ready data; a head or loss given as an object is saved by type name."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "num_outputs": self.num_outputs,
            "weight": self.weight,
        }
        if self.kind == "segmentation":
            out["ignore_index"] = self.ignore_index
        for key in ("head", "loss"):
            value = getattr(self, key)
            if isinstance(value, str):
                out[key] = value
            elif value is not None:
                out[key] = f"<{type(value).__name__}>"
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "tasks") -> Task:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: each task must be a mapping with name and kind.")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                f"{where}: task {shown(data.get('name', '?'))} has unknown key(s) "
                f"{', '.join(unknown)}; allowed: {', '.join(_FIELDS)}."
            )
        for key in ("name", "kind"):
            if key not in data:
                raise ConfigError(f"{where}: a task is missing '{key}'.")
        for key in ("head", "loss"):
            value = data.get(key)
            if isinstance(value, str) and value.startswith("<"):
                raise ConfigError(
                    f"{where}: task '{data['name']}' used a custom {key} {value}; pass the "
                    "object again through the Python API."
                )
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc


def load_tasks(source: str | Path | list[dict[str, Any]]) -> list[Task]:
    """Tasks from a YAML file (a list, or a mapping with a 'tasks' list) or from plain data."""
    where = "tasks"
    if isinstance(source, str | Path):
        path = Path(source)
        where = str(path)
        data = read_yaml(path, "tasks file not found; give a YAML file listing the tasks.")
    else:
        data = source
    if isinstance(data, dict):
        data = data.get("tasks")
    if not isinstance(data, list) or not data:
        raise ConfigError(
            f"{where}: expected a non-empty list of tasks (or a mapping with a 'tasks' list), "
            "each with name and kind."
        )
    tasks = [Task.from_dict(item, where) for item in data]
    check_tasks(tasks)
    return tasks


def check_tasks(tasks: list[Task]) -> None:
    """Reject an empty task list and duplicate names."""
    if not tasks:
        raise ConfigError("at least one task is needed.")
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"task names must be unique; repeated: {', '.join(dupes)}.")
