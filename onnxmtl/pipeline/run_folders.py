"""Run-folder admin for every command that trains: whether to resume, the lock, what run.json
records and the refusal to resume with other settings, and a finished run's result."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from onnxmtl.compiler import Policy
from onnxmtl.data import data_fingerprint
from onnxmtl.data.torch_dataset import DataSource, data_label
from onnxmtl.errors import ConfigError, RunFolderError
from onnxmtl.io_utils import atomic_write_text
from onnxmtl.run_folder import RunFolder, check_fresh, clear_run, locked, read_run
from onnxmtl.tasks import Task
from onnxmtl.training import distributed
from onnxmtl.training.config import SearchConfig
from onnxmtl.training.result import SearchResult

RESUME_FREE = ("device", "threads", "checkpoint_every", "latency_cache")  # may change on --resume


def prepare_dir(out: Path, resume: bool, force: bool) -> bool:
    """Check the run folder: returns whether to resume. A folder holding a run (a
    checkpoint) is never reused without --resume or --force; --force clears only a run
    onnxmtl wrote (`clear_run`); a folder holding other files is never used (`check_fresh`)."""
    holds_run = has_checkpoint(out)
    distributed.barrier()  # every process has looked before rank 0 writes or deletes
    if force:
        if distributed.is_main():
            clear_run(out)
        distributed.barrier()
        return False
    if holds_run and not resume:
        raise ConfigError(
            f"{out}: already holds a run; pass --resume to continue it or --force to start over."
        )
    if resume and not has_checkpoint(out):
        raise ConfigError(f"{out}: no checkpoint to resume; run without --resume.")
    if not resume:
        check_fresh(out)
    return resume


def writing(out: Path) -> contextlib.AbstractContextManager:
    """The run folder's lock (`locked`), which also lists the files written, in the process
    that writes files; nothing in the others (under torchrun)."""
    return locked(out) if distributed.is_main() else contextlib.nullcontext()


def has_checkpoint(out: Path) -> bool:
    """Whether a run folder (or, for single-task baselines, one of its task folders) holds a
    checkpoint to resume from."""
    return RunFolder(out).has_checkpoint()


def run_info(
    kind: str,
    model_path: str | Path,
    data: DataSource,
    tasks: list[Task] | None,
    config: SearchConfig,
    policy: str | Path | Policy | None = None,
) -> dict[str, Any]:
    """What run.json records: what the run is, from which model file (path and content
    hash), data, tasks (a pipeline's stages record their own: None) and config; --resume
    compares these (`check_resume`)."""
    info: dict[str, Any] = {
        "kind": kind,
        "model": str(model_path),
        "model_sha256": file_hash(model_path),
        "data": data_label(data),
        "data_sha256": data_fingerprint(data),
        "config": config.to_dict(),
    }
    if tasks is not None:
        info["tasks"] = [t.to_dict() for t in tasks]
    if isinstance(policy, Policy):
        info["policy_sha256"] = hashlib.sha256(policy.to_json().encode()).hexdigest()
    elif policy is not None:
        info["policy_sha256"] = file_hash(policy)
    return json.loads(json.dumps(info, default=str))


def file_hash(path: str | Path) -> str | None:
    """The SHA-256 of a file's bytes (None if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def check_resume(out: Path, info: dict[str, Any]) -> None:
    """Refuse to resume the run in `out` with other settings than it was started with:
    another kind of run, model file, dataset, tasks or config option (all but
    RESUME_FREE), listing every field that differs."""
    stored = read_run(out)
    given_config, stored_config = info["config"], stored.get("config", {})
    differ: list[tuple[str, Any, Any]] = []
    for key in ("kind", "model_sha256", "policy_sha256", "data", "data_sha256", "tasks"):
        if key in stored and stored[key] != info.get(key):
            name = {"model_sha256": "model", "policy_sha256": "policy"}.get(key, key)
            name = "the data's files" if key == "data_sha256" else name
            differ.append((name, stored.get(key), info.get(key)))
    defaults = SearchConfig().to_dict()
    for key in sorted(set(given_config) | set(stored_config)):
        if key not in stored_config and given_config.get(key) == defaults.get(key):
            continue  # an option added since the run started, at its default: the same run
        if key not in RESUME_FREE and stored_config.get(key) != given_config.get(key):
            differ.append((key, stored_config.get(key), given_config.get(key)))
    if not differ:
        return
    named = ("model", "policy", "tasks", "the data's files")  # said by name, not by value
    details = ", ".join(
        name if name in named else f"{name} {old!r} -> {new!r}" for name, old, new in differ
    )
    raise RunFolderError(
        f"{out}: holds a run started with other settings ({details}); to continue it give "
        "its own model, data, tasks and config, or start over with --force."
    )


def finished(folder: Path) -> SearchResult | None:
    """The result of a run folder that finished, from its files; None if it has not."""
    files = RunFolder(folder)
    if not (files.metrics.exists() and files.supermodel.exists()):
        return None
    metrics = json.loads(files.metrics.read_text())
    return SearchResult(Policy.from_json(files.policy), metrics, folder)


def record(out: Path, info: dict[str, Any]) -> None:
    """Write run.json (rank 0)."""
    if distributed.is_main():
        atomic_write_text(RunFolder(out).run_file, json.dumps(info, indent=1))
