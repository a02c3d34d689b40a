"""A dataset folder's fingerprint, so that a resumed run can tell its data changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Files whose bytes are hashed (labels, tasks, split lists); others by name, size and time.
LABEL_SUFFIXES = (".csv", ".jsonl", ".json", ".yaml", ".yml", ".txt")


def data_fingerprint(data: object) -> str | None:
    """The SHA-256 of a dataset folder: every label, task and split file's bytes, and every
    other file's relative name, size and modification time (images are not read again). None
    for a named dataset or Python datasets, whose content onnxmtl draws itself."""
    if not isinstance(data, str | Path) or not Path(data).is_dir():
        return None
    root = Path(data)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            stat = path.lstat()
            digest.update(str(path.relative_to(root)).encode("utf-8", "surrogateescape"))
            if path.suffix.lower() in LABEL_SUFFIXES and path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            else:
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
