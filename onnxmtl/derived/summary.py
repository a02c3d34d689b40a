"""What a derived model holds, in one phrase for the terminal (`onnxmtl derive`)."""

from __future__ import annotations

from onnxmtl.derived.model import DerivedModel


def describe(model: DerivedModel) -> str:
    """Its tasks, how many blocks of each branch kind one forward runs, and its parameters."""
    counts = model.branch_counts()
    params = sum(p.numel() for p in model.parameters())
    return (
        f"tasks {', '.join(model.task_names)}; {counts['shared']} shared, "
        f"{counts['specific']} task-specific, {counts['skip']} projection-skip blocks; "
        f"{params:,} parameters"
    )
