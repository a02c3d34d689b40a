"""Save a derived model as the slice of its supermodel it uses, and load it back."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from onnxmtl.compiler import Policy, SuperModel
from onnxmtl.compiler.io import VERSION, read_state, supermodel_from_state, supermodel_state
from onnxmtl.derived.build import derive
from onnxmtl.derived.model import DerivedModel
from onnxmtl.io_utils import atomic_save

FORMAT = "onnxmtl.derived"


def save_derived(model: DerivedModel, supermodel: SuperModel, path: str | Path) -> None:
    """Write `model` as its policy plus the entries of `supermodel`'s state it was built from
    (with `model`'s current weights, so training after deriving is kept)."""
    own = model.state_dict()
    state = {}
    for name, source in model.sources.items():
        for key, value in own.items():
            if key == name or key.startswith(name + "."):
                state[source + key[len(name) :]] = value
    payload = supermodel_state(supermodel, state)
    payload.update(format=FORMAT, version=VERSION, policy=asdict(model.policy))
    atomic_save(Path(path), payload)


def load_derived(path: str | Path) -> DerivedModel:
    """Rebuild a derived model saved by `save_derived`."""
    state = read_state(path, FORMAT, "derived model")
    supermodel = supermodel_from_state(state, path, strict=False)
    policy = Policy(**state["policy"])
    full = supermodel.uniform_policy(0).choices
    names = supermodel.task_names
    for task, row in zip(policy.tasks, policy.choices):
        full[names.index(task)] = row
    model = derive(supermodel, full, policy.tasks)
    model.policy = policy
    return model
