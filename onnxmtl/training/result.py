"""`SearchResult`: what a finished run gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxmtl.compiler import Policy


@dataclass
class SearchResult:
    """What a finished run gives: the policy, the final metrics and where the files are."""

    policy: Policy
    metrics: dict[str, dict[str, dict[str, float]]]  # split -> task -> metric -> value
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
