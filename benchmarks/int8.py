"""INT8: a finished run's models quantised at several tolerances, every task's test metrics
and the latency of each against fp32, side by side: the accuracy-speed trade-off.

    .venv/bin/python benchmarks/int8.py RUN [--models searched skip-last-3]
        [--tolerances 1 1000] [--threads 1] [--out docs/benchmarks/int8.json]

A tolerance of 1000 keeps nothing in float (every convolution in INT8): the fastest model and
its accuracy; 1 keeps in float the nodes, measured, that bring every task within 1% of fp32.
Time it with nothing else running. Writes the figures with the commit, machine and command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance  # noqa: E402
from onnxmtl.pipeline.quantize_run import quantize, quantize_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `onnxmtl run` folder")
    parser.add_argument("--models", nargs="+", default=["searched"])
    parser.add_argument("--tolerances", nargs="+", type=float, default=[1.0, 1000.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "int8.json")
    args = parser.parse_args()
    rows = []
    for model in args.models:
        for tolerance in args.tolerances:
            result = quantize(
                args.run, model=model, tolerance=tolerance, threads=args.threads,
                repeats=args.repeats,
            )  # fmt: skip
            rows.append({"model": model, "tolerance": tolerance, **result})
            print(f"\n## {model}, tolerance {tolerance:g}%\n\n{quantize_table(result)}", flush=True)
    record = {**provenance("int8.py", f"{args.threads} onnxruntime thread(s)"), "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
