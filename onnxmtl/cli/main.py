"""`main`: parse, run the command, and turn the library's errors into one line and exit 2."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from onnxmtl.cli.parser import build_parser
from onnxmtl.errors import OnnxMtlError


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says memory ran out: Python's MemoryError, or torch's allocator failing
    (a RuntimeError, or its OutOfMemoryError subclass on a GPU), which MemoryError misses."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("RANK", 0)) > 0:  # under torchrun only rank 0 prints results
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OnnxMtlError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if args.debug or not out_of_memory(exc):
            raise
        tried = re.search(r"tried to allocate ([\d.]+ ?[KMGT]?i?B|\d+ bytes)", str(exc))
        detail = f" (tried to allocate {tried.group(1)})" if tried else ""
        print(
            f"error: out of memory{detail}; use smaller sizes (batch_size, data size, "
            "--batch-sizes, a task's num_outputs).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        how = "add --resume to the same command" if hasattr(args, "resume") else "run it again"
        again = f"; {how} to continue {out}" if out else ""
        print(f"interrupted{again}", file=sys.stderr)
        return 130
