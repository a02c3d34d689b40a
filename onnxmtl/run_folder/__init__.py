"""Run folders: the names of their files, which files are onnxmtl's, clearing one for
--force, and a lock while a process writes to one."""

from onnxmtl.run_folder.lock import locked
from onnxmtl.run_folder.names import LOCK_FILE, RUN_FILE, PipelineFolder, RunFolder
from onnxmtl.run_folder.ownership import (
    check_fresh,
    clear_run,
    foreign_entries,
    is_run,
    own_files,
    read_run,
    remove_stray_temps,
)

__all__ = [
    "check_fresh",
    "LOCK_FILE",
    "RUN_FILE",
    "PipelineFolder",
    "RunFolder",
    "clear_run",
    "foreign_entries",
    "is_run",
    "locked",
    "own_files",
    "read_run",
    "remove_stray_temps",
]
