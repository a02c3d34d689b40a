"""Runtimes: a finished run's exported models in onnxruntime and in OpenVINO (CPU, at each
precision hint), side by side in one process, with OpenVINO's parity against onnxruntime.

    .venv/bin/python benchmarks/runtimes.py RUN [--batch-sizes 1 8] [--repeats 100]
        [--threads 0] [--out docs/benchmarks/runtimes.json]

Time it with nothing else running. Prints one table per runtime and writes every figure with
the commit, machine and command to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance  # noqa: E402
from onnxmtl.benchmark import bench, to_markdown  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `onnxmtl run` folder")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "runtimes.json")
    args = parser.parse_args()
    models = {
        p.stem: p
        for p in sorted((args.run / "models").glob("*.onnx"))
        if not p.stem.endswith(".int8") and not p.stem.startswith("single-")
    }
    results = {}
    for runtime, precision in (("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "bf16")):
        result = bench(
            models, args.batch_sizes, threads=args.threads, repeats=args.repeats, memory=False,
            runtime=runtime, precision=precision,
        )  # fmt: skip
        label = runtime if runtime == "onnxruntime" else f"{runtime} {precision}"
        results[label] = result.to_dict()
        print(f"\n## {label}\n\n{to_markdown(result)}", flush=True)
    record = {
        **provenance("runtimes.py", f"{args.threads or 'default'} onnxruntime threads"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
