"""Read IDX files (the MNIST / Fashion-MNIST format), gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from onnxmtl.errors import DataError

_DTYPES: dict[int, np.dtype] = {
    code: np.dtype(kind)
    for code, kind in {
        0x08: "u1",
        0x09: "i1",
        0x0B: ">i2",
        0x0C: ">i4",
        0x0D: ">f4",
        0x0E: ">f8",
    }.items()
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file."""
    path = Path(path)
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc}).") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number).")
    rank = raw[3]
    header = 4 + 4 * rank
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    dtype = _DTYPES[raw[2]]
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: truncated or padded IDX file ({len(raw)} bytes, {expected} expected)."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
