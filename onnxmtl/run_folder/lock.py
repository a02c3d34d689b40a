"""A lock on a run folder while one process writes to it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from onnxmtl.errors import RunFolderError
from onnxmtl.io_utils import FILE_LIST, listing_writes
from onnxmtl.run_folder.names import LOCK_FILE
from onnxmtl.run_folder.ownership import remove_stray_temps

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; the other guarantees hold
    HAS_FCNTL = False
else:
    HAS_FCNTL = True


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an OS lock on `folder` (on its .onnxmtl.lock file) while the block runs, after
    removing stray temporary files, and list every file written into it meanwhile
    (`listing_writes`). A second process asking for the same folder gets a RunFolderError at
    once; the OS releases the lock when the holder exits, even when it is killed, so no stale
    lock remains. A folder this call created and that is still empty afterwards (a failed
    start) is removed again."""
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
        if HAS_FCNTL:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise RunFolderError(
                    f"{folder}: another onnxmtl process is writing to this run folder; wait "
                    "for it to finish or give another --out."
                ) from exc
        try:
            remove_stray_temps(folder)
            with listing_writes(folder):
                yield
        finally:
            if not [p for p in folder.iterdir() if p.name not in (LOCK_FILE, FILE_LIST)]:
                (folder / FILE_LIST).unlink(missing_ok=True)
                (folder / LOCK_FILE).unlink(missing_ok=True)
                if created:
                    folder.rmdir()
    finally:
        os.close(fd)
