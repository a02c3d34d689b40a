"""Hostile input on the command line: every case fails with one line on stderr and exit
code 2, writes nothing half-way, runs no code from a run folder and deletes no user file.

Each row of CASES prepares its files in a fresh folder and gives the command's arguments;
its check (if any) then looks at what is left on disk."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from onnxmtl.training.runs import search
from tests.test_cli import assert_clean_error, run_cli

CONFIG = """batch_size: 4
warmup_steps: 1
search_steps: 1
post_train_steps: 1
baseline_steps: 1
batchnorm_batches: 1
eval_batches: 1
data: {count: 16, size: 32, cache_dir: CACHE}
"""


@dataclass
class Env:
    """Files the cases share (built once per module) and the case's own folder."""

    model: Path  # a tiny backbone (ONNX)
    config: Path  # a tiny search config
    run: Path  # a finished tiny search run folder
    tmp: Path  # this case's folder

    def copy_run(self) -> Path:
        """A copy of the finished run in the case's folder."""
        return Path(shutil.copytree(self.run, self.tmp / "run"))

    def search(self, out: Path, *extra: str) -> list[str]:
        """Arguments of a tiny `search` into `out`."""
        return [
            "search",
            str(self.model),
            "--data",
            "scenes",
            "--config",
            str(self.config),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]


@pytest.fixture(scope="module")
def shared(tiny_export, tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("hostile")
    config = root / "config.yaml"
    config.write_text(CONFIG.replace("CACHE", str(root / "cache")))
    model = tiny_export("legacy17", fold_bn=True)
    search(model, "scenes", root / "run", config=config, progress=False)
    return model, config, root / "run"


class _Marker:
    """Unpickling this creates the file MARKER_PATH: how a malicious checkpoint runs code."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious_checkpoint(env: Env) -> list[str]:
    run = env.copy_run()
    marker = _Marker()
    marker.path = str(env.tmp / "MARKER")
    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"phase": marker}, f)
    return env.search(run, "--resume")


def _no_marker(env: Env) -> None:
    assert not (env.tmp / "MARKER").exists(), "the checkpoint ran code"


def _truncated_checkpoint(env: Env) -> list[str]:
    run = env.copy_run()
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return env.search(run, "--resume")


def _foreign_checkpoint(env: Env) -> list[str]:
    run = env.copy_run()
    shutil.copy(run / "supermodel.pt", run / "checkpoint.pt")
    return env.search(run, "--resume")


@dataclass
class Case:
    id: str
    setup: Callable[[Env], list[str]]  # prepares files, returns the CLI arguments
    fragments: tuple[str, ...]  # what the one line of stderr must say
    check: Callable[[Env], None] | None = None  # what must (not) be on disk afterwards


CASES = [
    Case(
        "malicious-checkpoint",
        _malicious_checkpoint,
        ("checkpoint.pt", "could run code"),
        _no_marker,
    ),
    Case("truncated-checkpoint", _truncated_checkpoint, ("checkpoint.pt", "truncated")),
    Case("foreign-checkpoint", _foreign_checkpoint, ("checkpoint.pt", "does not fit")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_fails_in_one_line(case: Case, shared, tmp_path) -> None:
    env = Env(*shared, tmp_path)
    args = case.setup(env)
    assert_clean_error(run_cli(*args), *case.fragments)
    if case.check is not None:
        case.check(env)
