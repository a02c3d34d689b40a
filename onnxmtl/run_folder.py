"""Run folders: which files in them are onnxmtl's, a lock while a process writes to one, and
clearing one for --force without touching anything onnxmtl did not write.

A folder is a run when it holds onnxmtl's `run.json`. Its layout (`Layout`) names every file
and subfolder onnxmtl writes there; --force deletes a run only when everything in it fits
the layout, and then only those entries, so a user's file in the folder is never lost.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from onnxmtl.errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; the other guarantees hold
    fcntl = None

RUN_FILE = "run.json"
LOCK_FILE = ".onnxmtl.lock"

# name pattern -> None for a file, or the layout of a folder by that name
Layout = dict[str, Union["Layout", None]]


def is_run(folder: Path) -> bool:
    """Whether `folder` holds a run.json that onnxmtl wrote (a JSON object with a 'kind')."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return False
    try:
        info = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "kind" in info


def read_run(folder: Path) -> dict:
    """The run.json of `folder`; RunFolderError if it is missing or not onnxmtl's."""
    path = Path(folder) / RUN_FILE
    if not is_run(folder):
        raise RunFolderError(f"{path}: missing or not written by onnxmtl; not a run folder.")
    return json.loads(path.read_bytes())


def _is_temp_of(name: str, pattern: str) -> bool:
    """Whether `name` is an atomic write's temporary file (`.NAME.XXXX.tmp`) of a file
    matching `pattern`."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    target = name[1:-4].rsplit(".", 1)[0]
    return fnmatch.fnmatchcase(target, pattern)


def _own_entry(path: Path, layout: Layout) -> Layout | None | bool:
    """What `layout` says `path` is: None (an own file), a Layout (an own folder), or False
    (not onnxmtl's)."""
    name = path.name
    if path.is_symlink():
        return False
    if path.is_dir():
        for pattern, sub in layout.items():
            if sub is not None and fnmatch.fnmatchcase(name, pattern):
                return sub
        return False
    if name == LOCK_FILE:
        return None
    for pattern, sub in layout.items():
        if sub is None and (fnmatch.fnmatchcase(name, pattern) or _is_temp_of(name, pattern)):
            return None
    return False


def foreign_entries(folder: Path, layout: Layout) -> list[Path]:
    """Everything in `folder` (recursively) that `layout` does not name as onnxmtl's."""
    found: list[Path] = []
    for entry in sorted(Path(folder).iterdir()):
        kind = _own_entry(entry, layout)
        if kind is False:
            found.append(entry)
        elif kind is not None:
            found.extend(foreign_entries(entry, kind))
    return found


def clear_run(folder: Path, layout: Layout) -> None:
    """Delete the run in `folder` for --force: only if the folder is a run (its run.json)
    and holds nothing but what `layout` names; then only those entries (the folder and its
    lock file stay). A folder that is not a run, or holds other files, is refused with a
    RunFolderError naming them, and nothing is deleted."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: is a file, not a run folder; give another --out.")
    entries = [p for p in folder.iterdir() if p.name != LOCK_FILE]
    if not entries:
        return
    if not is_run(folder):
        raise RunFolderError(
            f"{folder}: not a run folder (no onnxmtl {RUN_FILE}; it holds "
            f"{_listing(folder, entries)}); --force only replaces a run onnxmtl wrote: give an "
            "empty or new --out."
        )
    foreign = foreign_entries(folder, layout)
    if foreign:
        raise RunFolderError(
            f"{folder}: holds files onnxmtl did not write ({_listing(folder, foreign)}); "
            "--force deletes only a run's own files: move them out or give another --out."
        )
    _delete_own(folder, layout)


def _listing(folder: Path, paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(str(p.relative_to(folder)) for p in sorted(paths)[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _delete_own(folder: Path, layout: Layout) -> None:
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        kind = _own_entry(entry, layout)
        if kind is None:
            entry.unlink()
        elif kind is not False:
            _delete_own(entry, kind)
            entry.rmdir()


def remove_stray_temps(folder: Path, layout: Layout) -> None:
    """Delete the temporary files of atomic writes that were interrupted (a killed process
    leaves `.NAME.XXXX.tmp` next to NAME) in `folder` and its own subfolders."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        kind = _own_entry(entry, layout)
        if kind is None and entry.name.endswith(".tmp") and entry.name.startswith("."):
            entry.unlink(missing_ok=True)
        elif kind not in (None, False):
            remove_stray_temps(entry, kind)


@contextlib.contextmanager
def locked(folder: Path, layout: Layout) -> Iterator[None]:
    """Hold an OS lock on `folder` (on its .onnxmtl.lock file) while the block runs, after
    removing stray temporary files. A second process asking for the same folder gets a
    RunFolderError at once; the OS releases the lock when the holder exits, even when it is
    killed, so no stale lock remains. A folder this call created and that is still empty
    afterwards (a failed start) is removed again."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RunFolderError(
            f"{folder}: cannot create the run folder or its lock ({exc.strerror}); check the "
            "path and its permissions."
        ) from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise RunFolderError(
                    f"{folder}: another onnxmtl process is writing to this run folder; wait "
                    "for it to finish or give another --out."
                ) from exc
        try:
            remove_stray_temps(folder, layout)
            yield
        finally:
            if not [p for p in folder.iterdir() if p.name != LOCK_FILE]:
                (folder / LOCK_FILE).unlink(missing_ok=True)
                if created:
                    folder.rmdir()
    finally:
        os.close(fd)
