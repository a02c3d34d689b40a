"""`main`: parse, run the command, and turn the library's errors into one line and exit 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from onnxmtl.cli.parser import build_parser
from onnxmtl.errors import OnnxMtlError


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
    except MemoryError:
        if args.debug:
            raise
        print(
            "error: out of memory; use smaller sizes (batch_size, data size, --batch-sizes).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        how = "add --resume to the same command" if hasattr(args, "resume") else "run it again"
        again = f"; {how} to continue {out}" if out else ""
        print(f"interrupted{again}", file=sys.stderr)
        return 130
