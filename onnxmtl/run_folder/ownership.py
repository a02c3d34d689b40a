"""Which files in a run folder are onnxmtl's, and clearing one for --force without touching
anything onnxmtl did not write.

A folder is a run when it holds onnxmtl's `run.json`. Every file onnxmtl writes into a run
folder is first added to the folder's file list (`onnxmtl.io_utils.FILE_LIST`, kept while
the folder is locked); --force deletes a run only when everything in it is on that list (or
on the list of a run folder the list names), and then only those files, so a user's file in
the folder is never lost, whatever its name.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from onnxmtl.errors import RunFolderError
from onnxmtl.io_utils import FILE_LIST, forget_file_list, read_file_list
from onnxmtl.run_folder.names import LOCK_FILE, RUN_FILE


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


def own_files(folder: Path) -> set[Path]:
    """Every file `folder`'s file list names, with those of the folders whose lists it names
    (the stages of a pipeline), their lists and locks included. A name that would leave the
    folder or pass through a symbolic link is not onnxmtl's, whatever the list says."""
    folder = Path(folder)
    own: set[Path] = set()
    for name in read_file_list(folder):
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            continue
        path = folder.joinpath(*parts)
        if any(p.is_symlink() for p in [path, *path.parents] if p.is_relative_to(folder)):
            continue
        own.add(path)
        if path.name == FILE_LIST and path.parent != folder:
            own |= own_files(path.parent) | {path.parent / LOCK_FILE}
    return own


def _is_temp_of(path: Path, own: set[Path]) -> bool:
    """Whether `path` is an atomic write's temporary file (`.NAME.XXXX.tmp`) of an own file."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    return path.parent / name[1:-4].rsplit(".", 1)[0] in own


def foreign_entries(folder: Path) -> list[Path]:
    """Everything in `folder` (recursively) that onnxmtl did not write there: files on no
    file list (`own_files`), symbolic links, and folders holding such files. Empty folders
    are nobody's loss and are left out."""
    folder = Path(folder)
    return _foreign(folder, own_files(folder))


def _foreign(folder: Path, own: set[Path]) -> list[Path]:
    """`foreign_entries` of `folder`, whose list names the `own` files."""
    own = own | {folder / FILE_LIST, folder / LOCK_FILE}
    dirs = {p for path in own for p in path.parents if p.is_relative_to(folder)}

    def walk(at: Path) -> list[Path]:
        found: list[Path] = []
        for entry in sorted(at.iterdir()):
            if entry.is_symlink():
                found.append(entry)
            elif entry.is_dir():
                inner = walk(entry)
                if entry in dirs:
                    found.extend(inner)
                elif inner or any(entry.iterdir()):
                    found.append(entry)
            elif entry not in own and not _is_temp_of(entry, own):
                found.append(entry)
        return found

    return walk(folder)


def clear_run(folder: Path) -> None:
    """Delete the run in `folder` for --force: only if the folder is a run (its run.json)
    and holds nothing but what its file list names; then only those files, and the folders
    they leave empty (the folder and its lock stay). A folder that is not a run, or holds
    other files, is refused with a RunFolderError naming them, and nothing is deleted."""
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
    if not (folder / FILE_LIST).is_file():
        raise RunFolderError(
            f"{folder}: a run written by an onnxmtl that kept no list of its files "
            f"({FILE_LIST}), so --force cannot tell them from yours; delete the folder "
            "yourself or give another --out."
        )
    own = own_files(folder)
    foreign = _foreign(folder, own)
    if foreign:
        raise RunFolderError(
            f"{folder}: holds files onnxmtl did not write ({_listing(folder, foreign)}); "
            "--force deletes only a run's own files: move them out or give another --out."
        )
    for path in own:
        if path.parent == folder and path.name in (LOCK_FILE, FILE_LIST):
            continue
        if path.is_file() and not path.is_symlink():
            path.unlink()
    _remove_temps_of(folder, own)
    for path in sorted({p for f in own for p in f.parents}, key=lambda p: -len(p.parts)):
        inside = path != folder and path.is_relative_to(folder)
        if inside and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    forget_file_list(folder)


def check_fresh(folder: Path) -> None:
    """Refuse to start a run in `folder` when it holds files but no onnxmtl run, other than
    those an interrupted start of onnxmtl listed: they are the user's, and a run would
    overwrite or delete some of them."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if p.name != LOCK_FILE] if folder.is_dir() else []
    if entries and not is_run(folder) and foreign_entries(folder):
        raise RunFolderError(
            f"{folder}: holds files that are not an onnxmtl run ({_listing(folder, entries)}); "
            "give an empty or new --out."
        )


def _listing(folder: Path, paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(str(p.relative_to(folder)) for p in sorted(paths)[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def remove_stray_temps(folder: Path) -> None:
    """Delete the temporary files of atomic writes that were interrupted (a killed process
    leaves `.NAME.XXXX.tmp` next to NAME) of the files `folder`'s list names."""
    folder = Path(folder)
    if folder.is_dir():
        _remove_temps_of(folder, own_files(folder))


def _remove_temps_of(folder: Path, own: set[Path]) -> None:
    """Delete the atomic writes' temporary files of the `own` files, anywhere in `folder`."""
    for path in folder.rglob(".*.tmp"):
        if _is_temp_of(path, own) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
