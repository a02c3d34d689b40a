"""Which files in a run folder are onnxmtl's, and clearing one for --force without touching
anything onnxmtl did not write.

A folder is a run when it holds onnxmtl's `run.json`. Its layout (`Layout`, from
`onnxmtl.run_folder.names`) names every file and subfolder onnxmtl writes there; --force
deletes a run only when everything in it fits the layout, and then only those entries, so a
user's file in the folder is never lost.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Literal

import onnx

from onnxmtl.errors import RunFolderError
from onnxmtl.run_folder.names import LOCK_FILE, RUN_FILE, Layout, RunFolder

EXPORTED_KEY = (
    "onnxmtl.exported_from"  # onnxmtl.ir.from_torch writes it into the backbones it exports
)


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


def _own_entry(path: Path, layout: Layout) -> Layout | None | Literal[False]:
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
    layout = owned_layout(folder, layout)
    foreign = foreign_entries(folder, layout)
    if foreign:
        raise RunFolderError(
            f"{folder}: holds files onnxmtl did not write ({_listing(folder, foreign)}); "
            "--force deletes only a run's own files: move them out or give another --out."
        )
    _delete_own(folder, layout)


def check_fresh(folder: Path) -> None:
    """Refuse to start a run in `folder` when it holds files but no onnxmtl run: they are the
    user's, and a run would overwrite or delete some of them."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if p.name != LOCK_FILE] if folder.is_dir() else []
    if entries and not is_run(folder):
        raise RunFolderError(
            f"{folder}: holds files that are not an onnxmtl run ({_listing(folder, entries)}); "
            "give an empty or new --out."
        )


def owned_layout(folder: Path, layout: Layout) -> Layout:
    """`layout` narrowed, by each run folder's run.json, to what onnxmtl wrote there: a
    backbone file only where onnxmtl exported it from a module (a user's own backbone.onnx is
    the user's), and task folders only under the names of the run's tasks (a user's
    subfolder that happens to hold a config.json is the user's)."""
    info = read_run(folder) if is_run(folder) else {}
    owned: Layout = {}
    for pattern, sub in layout.items():
        path = folder / pattern
        if pattern == RunFolder.BACKBONE and not _exported(path):
            continue
        if pattern == "*" and sub is not None:
            for task in info.get("tasks", []):
                if isinstance(task, dict) and isinstance(task.get("name"), str):
                    owned[task["name"]] = owned_layout(folder / task["name"], sub)
        elif sub is not None and not any(c in pattern for c in "*?["):
            owned[pattern] = owned_layout(path, sub)
        else:
            owned[pattern] = sub
    return owned


def _exported(path: Path) -> bool:
    """Whether `path` is a backbone onnxmtl exported from a PyTorch module (its mark)."""
    if not path.is_file():
        return True  # nothing there to protect
    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
    except Exception:  # not ONNX at all: not ours
        return False
    return any(p.key == EXPORTED_KEY for p in props)


def _listing(folder: Path, paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(str(p.relative_to(folder)) for p in sorted(paths)[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _delete_own(folder: Path, layout: Layout, top: bool = True) -> None:
    """Delete what `layout` names in `folder`; the lock of `folder` itself stays (its holder
    is clearing it), those of its subfolders (stages that ran before) go with them."""
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE and top:
            continue
        kind = _own_entry(entry, layout)
        if kind is None:
            entry.unlink()
        elif kind is not False:
            _delete_own(entry, kind, top=False)
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
        elif kind is not None and kind is not False:
            remove_stray_temps(entry, kind)
