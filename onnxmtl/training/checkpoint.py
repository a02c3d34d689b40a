"""`Checkpointer`: the run's saved state (checkpoint.pt, and initial.pt for
`post_train_init: backbone`): what it holds, writing it, and restoring a run from it."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from onnxmtl.compiler import Policy
from onnxmtl.errors import ConfigError, RunFolderError, first_line
from onnxmtl.io_utils import atomic_save
from onnxmtl.training.finite import check_weights
from onnxmtl.training.log import MetricsLog
from onnxmtl.training.random_state import rng_state, set_rng_state
from onnxmtl.training.session import Session

if TYPE_CHECKING:  # the phases use the checkpointer (search restores the initial weights)
    from onnxmtl.training.phases import Phase

NO_OPTIMIZERS = ("opt", "policy_opt", "scheduler")  # a finished run's checkpoint keeps none


class Checkpointer:
    """Saves and restores everything a run needs to continue exactly: the phase and step,
    the weights and logits, the policy, the loss weighting, the optimisers, the gradient
    scaler, the batch streams, the random generators, how many log rows were written and the
    conflict measurements. Only the process that writes files writes them."""

    def __init__(self, run: Session, log: MetricsLog) -> None:
        self.run, self.log = run, log

    def save(self, phase: Phase | None, done: str) -> None:
        """Write checkpoint.pt in `phase` (None after the last one, saved as `done`), after
        checking that every weight is finite."""
        run = self.run
        where = run.where(phase.title if phase else done, run.step)
        check_weights(run.model, where)
        state = {
            "phase": phase.name if phase else done,
            "step": run.step,
            "policy_steps": run.policy_steps,
            "model": run.model.state_dict(),
            "policy": None if run.policy is None else run.policy.__dict__,
            "weighting": run.weighting.state_dict(),
            **(phase.optimizers.state_dict() if phase else dict.fromkeys(NO_OPTIMIZERS)),
            "scaler": run.precision.scaler.state_dict(),
            "streams": {k: s.state_dict() for k, s in run.streams.items()},
            "rng": rng_state(),
            "log_lines": len(self.log.history),
            "conflict": run.conflict.state_dict(),
        }
        if run.main:
            atomic_save(run.folder.checkpoint, state)

    def restore(self, phases: Sequence[Phase], done: str) -> int:
        """Continue from checkpoint.pt: returns the index in `phases` of the phase to continue
        (`len(phases)` when the checkpoint is `done`). It is read with `weights_only` (tensors
        and plain data only: a checkpoint from elsewhere cannot run code), and one that
        cannot be read or does not fit this run is refused with a RunFolderError naming it."""
        path = self.run.folder.checkpoint
        state = read_checkpoint(path)
        try:
            return self._restore(state, phases, done)
        except MISFIT as exc:
            raise _does_not_fit(path, exc) from exc

    def _restore(self, state: dict[str, Any], phases: Sequence[Phase], done: str) -> int:
        run = self.run
        names = [p.name for p in phases] + [done]
        if state["phase"] not in names:
            raise ValueError(f"unknown phase {state['phase']!r}")
        index = names.index(state["phase"])
        run.step, run.policy_steps = state["step"], state["policy_steps"]
        run.model.load_state_dict(state["model"])
        if state["phase"] in (phases[-1].name, done):  # before, no policy is derived yet
            run.policy = Policy(**state["policy"])
        run.weighting.load_state_dict(state["weighting"])
        run.conflict.load_state_dict(state["conflict"])
        if state.get("scaler"):
            run.precision.scaler.load_state_dict(state["scaler"])
        for name, stream in run.streams.items():
            stream.load_state_dict(state["streams"][name])
        if index < len(phases):
            phases[index].begin()
            phases[index].optimizers.load_state_dict(state)
        set_rng_state(state["rng"])
        self.log.truncate(state["log_lines"])
        return index

    def save_initial(self) -> None:
        """Keep the weights at the start (for `post_train_init: backbone`)."""
        if self.run.main:
            atomic_save(self.run.folder.initial, self.run.model.state_dict())

    def restore_initial(self, keep: dict[str, torch.Tensor]) -> None:
        """Put back the weights `save_initial` kept, but `keep` (name -> tensor); a file whose
        weights are not this model's is refused with a RunFolderError naming it, as a
        checkpoint that does not fit is."""
        self.run.model.load_state_dict(
            initial_weights(self.run.folder.initial, self.run.model, keep)
        )


def initial_weights(
    path: Path, model: torch.nn.Module, keep: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The weights `save_initial` kept in `path`, but `keep` (name -> tensor), checked to fit
    `model` name by name and shape by shape: a file holding another model's weights is
    refused with a RunFolderError naming it, as a checkpoint that does not fit is."""
    state = {**read_checkpoint(path), **keep}
    expected = model.state_dict()
    names = set(state) ^ set(expected)
    if names:
        raise _does_not_fit(
            path, KeyError(f"{len(names)} weight name(s) differ, e.g. {min(names)}")
        )
    for name, value in expected.items():
        if not isinstance(state[name], torch.Tensor) or state[name].shape != value.shape:
            raise _does_not_fit(path, ValueError(f"{name} is not a tensor of {list(value.shape)}"))
    return state


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The dict in a checkpoint file, read with `weights_only`: a file that holds anything
    but tensors and plain data (which could run code when unpickled), or is truncated or
    not a checkpoint at all, is refused with a RunFolderError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the protocol of foreign pickles
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunFolderError(
            f"{path}: holds objects other than tensors and plain data, which onnxmtl never "
            "loads (they could run code); delete the file or start over with --force."
        ) from exc
    except Exception as exc:
        raise RunFolderError(
            f"{path}: not a checkpoint onnxmtl can read ({type(exc).__name__}; truncated or "
            "written by something else); delete the file or start over with --force."
        ) from exc
    if not isinstance(state, dict):
        raise RunFolderError(f"{path}: not a checkpoint written by onnxmtl; delete the file.")
    return state


# What reading a saved state into a run raises where the state is another run's.
MISFIT = (KeyError, TypeError, ValueError, RuntimeError, IndexError, ConfigError)


def _does_not_fit(path: Path, exc: BaseException) -> RunFolderError:
    return RunFolderError(
        f"{path}: does not fit this run ({type(exc).__name__}: {first_line(exc)}); "
        "resume with the run's own model, tasks and config, or start over with --force."
    )
