"""File I/O: atomic writes (a crash or Ctrl-C never leaves a half-written file behind) and
YAML files read with one-line errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from onnxmtl.errors import ConfigError


def default_cache() -> Path:
    """Where generated datasets and measured tables are cached: $ONNXMTL_CACHE, else
    ~/.cache/onnxmtl."""
    return Path(os.environ.get("ONNXMTL_CACHE", Path.home() / ".cache" / "onnxmtl"))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_yaml(path: Path, missing: str) -> Any:
    """The data in a YAML file; ConfigError naming the file if it is missing (`missing` says
    what to do) or not valid YAML."""
    if not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}).") from exc
