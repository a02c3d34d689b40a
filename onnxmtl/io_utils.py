"""File I/O: atomic writes (a crash or Ctrl-C never leaves a half-written file behind), the
list of files written into a folder, and YAML files read with one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from onnxmtl.errors import ConfigError, OnnxMtlError, OutputError, first_line


def default_cache() -> Path:
    """Where generated datasets and measured tables are cached: $ONNXMTL_CACHE, else
    ~/.cache/onnxmtl."""
    return Path(os.environ.get("ONNXMTL_CACHE", Path.home() / ".cache" / "onnxmtl"))


FILE_LIST = ".onnxmtl-files"  # in a listed folder: every path written there, one a line

# The folders whose writes this process lists (`listing_writes`), outermost first, each with
# the paths its list holds.
_listed: list[tuple[Path, set[str]]] = []


def read_file_list(folder: Path) -> list[str]:
    """The paths (relative, '/'-separated) that `folder`'s file list names, in order; empty
    where it has none."""
    try:
        text = (Path(folder) / FILE_LIST).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return list(dict.fromkeys(line for line in text.splitlines() if line))


@contextlib.contextmanager
def listing_writes(folder: Path) -> Iterator[None]:
    """While the block runs, every file this process writes under `folder` (`atomic_write`,
    `note_write`) is first added to `folder`'s file list, so that the folder can later tell
    what onnxmtl wrote from what a user put there. A listed folder inside another is itself
    noted in the outer one's list (by its own list's path)."""
    folder = Path(folder).absolute()
    note_write(folder / FILE_LIST)
    _listed.append((folder, set(read_file_list(folder))))
    try:
        yield
    finally:
        _listed.pop()


def note_write(path: Path) -> None:
    """Add `path`, about to be written, to the file list of the innermost folder that
    `listing_writes` holds around it (nothing where none does)."""
    path = Path(path).absolute()
    for folder, names in reversed(_listed):
        if path == folder / FILE_LIST or not path.is_relative_to(folder):
            continue
        name = path.relative_to(folder).as_posix()
        if name not in names:
            try:
                with open(folder / FILE_LIST, "a", encoding="utf-8") as f:
                    f.write(name + "\n")
            except OSError as exc:
                raise OutputError(f"{folder / FILE_LIST}: cannot write ({exc.strerror}).") from exc
            names.add(name)
        return


def forget_file_list(folder: Path) -> None:
    """Delete `folder`'s file list (its files are gone), here and in this process's memory."""
    folder = Path(folder).absolute()
    (folder / FILE_LIST).unlink(missing_ok=True)
    for listed, names in _listed:
        if listed == folder:
            names.clear()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place with
    the permissions the umask gives new files; the path is first noted in the file list of
    the folder being written (`note_write`). A path that is a folder, a folder that cannot
    be written and a full disk are OutputErrors naming the path; the temporary file is
    removed whatever happens."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give the path of a file to write.")
    note_write(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there ({exc.strerror}).") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        refused = _os_error(exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if refused is None:
            raise
        raise OutputError(f"{path}: cannot write ({refused.strerror or refused}).") from exc


def atomic_save(path: Path, obj: Any) -> None:
    """`torch.save(obj)` to `path` atomically, through a Python file object: a full disk then
    surfaces as the OSError it is (torch's own file writer reports a bare RuntimeError)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError that `exc` is or was raised while handling (torch wraps a failed write of
    a Python file in a RuntimeError whose context is the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path, fix: str, error: type[OnnxMtlError] = ConfigError) -> Any:
    """The data in a JSON file; one `error` naming the file where it cannot be read, is not
    UTF-8 JSON or nests too deep for the parser (`fix` says what to do)."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        what = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise error(f"{path}: cannot read it as JSON ({what}); {fix}") from exc


def read_yaml(path: Path, missing: str) -> Any:
    """The data in a YAML file; ConfigError naming the file if it is missing (`missing` says
    what to do) or not valid YAML."""
    if not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({first_line(exc)}).") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give a YAML file.") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}).") from exc
