"""`Policy`: for every (task, unit) one branch: shared, task-specific or skip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxmtl.errors import ConfigError
from onnxmtl.io_utils import atomic_write_text, read_json

if TYPE_CHECKING:
    from onnxmtl.compiler.supermodel import SuperModel

SHARED, SPECIFIC, SKIP = 0, 1, 2
BRANCHES = ("shared", "specific", "skip")


@dataclass
class Policy:
    """A fixed sharing policy: `choices[t][u]` is SHARED, SPECIFIC or SKIP for task t, unit u.

    `logits` and `seed` record where a searched policy came from; `method` says how it was
    chosen ('argmax', 'sample', 'given', ...).
    """

    tasks: list[str]
    units: list[str]
    choices: list[list[int]]
    method: str = "given"
    seed: int | None = None
    logits: list[list[list[float]]] | None = None

    def __post_init__(self) -> None:
        if len(self.choices) != len(self.tasks) or any(
            len(row) != len(self.units) for row in self.choices
        ):
            raise ConfigError(
                f"policy has {len(self.choices)} row(s) for {len(self.tasks)} task(s); each row "
                f"needs one choice per unit ({len(self.units)})."
            )
        bad = {c for row in self.choices for c in row} - {SHARED, SPECIFIC, SKIP}
        if bad:
            raise ConfigError(
                f"policy choices must be 0 (shared), 1 (specific) or 2 (skip); found {sorted(bad)}."
            )

    def counts(self) -> dict[str, int]:
        """How many (task, unit) pairs took each branch."""
        flat = [c for row in self.choices for c in row]
        return {name: flat.count(i) for i, name in enumerate(BRANCHES)}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(asdict(self), indent=1)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Policy:
        path = Path(source)
        data: Any = read_json(path, "give a policy.json written by onnxmtl.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path}: not a policy file ({exc}).") from exc

    @classmethod
    def for_model(cls, source: str | Path, model: SuperModel) -> Policy:
        """The policy in a file, checked against the supermodel `model` it is to be applied
        to (its tasks, unit names and available branches); errors name the file."""
        policy = cls.from_json(source)
        try:
            model.choices_of(policy)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        return policy


def checked_choices(
    policy: Policy | list[list[int]] | None,
    tasks: list[str],
    units: list[str],
    skips: list[bool],
) -> list[list[int]]:
    """A policy's branch choices (tasks x units), checked against a supermodel of `tasks` and
    `units` whose unit u has a skip branch where `skips[u]`; None (the policy of a supermodel
    saved before policies were saved with it) is refused."""
    if policy is None:
        raise ConfigError(
            "this supermodel carries no policy (it was saved before policies were saved "
            "with it); pass one, e.g. the run's policy.json."
        )
    if isinstance(policy, Policy):
        if policy.tasks != tasks or len(policy.units) != len(units):
            raise ConfigError(
                f"policy is for tasks {policy.tasks} and {len(policy.units)} units; this "
                f"supermodel has tasks {tasks} and {len(units)} units."
            )
        if policy.units != units:
            u = next((i for i, (a, b) in enumerate(zip(policy.units, units)) if a != b), 0)
            raise ConfigError(
                f"policy is for other units than this supermodel's (unit {u}: "
                f"{policy.units[u]!r} in the policy, {units[u]!r} here); it was "
                "made for another backbone or feature cut, so it is not applied."
            )
        choices = policy.choices
    else:
        choices = [list(row) for row in policy]
        Policy(tasks, units, choices)
    for row in choices:
        for u, b in enumerate(row):
            if b == SKIP and not skips[u]:
                raise ConfigError(
                    f"policy skips unit '{units[u]}', which has no skip branch "
                    "(its shape change has no 1x1 projection)."
                )
    return choices
