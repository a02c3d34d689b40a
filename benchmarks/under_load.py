"""Speed beside another job: a search step alone, and two searches started together.

    .venv/bin/python benchmarks/under_load.py [--steps 60]

Each case runs `onnxmtl.search` in its own process on the demo's EfficientNet-Lite0 (64x64,
ImageNet weights) for fashion-locate's two tasks, batch 16, through the library's defaults
but for a short schedule (a few warm-up steps, `--steps` soft search steps, no post-training),
and reads the median time of a search step from the run's log. Two settings:
  - pinned: `threads` set to every core, as a run was before the fair share;
  - shared: the default (`threads: 0`), whose threads follow the cores others leave idle.
Each is timed alone, then as two processes started together. The goal (issue 35): beside one
other job of the same kind a step takes at most 2.5x its time alone (a fair share of 2 cores
is 2x), and alone the shared setting is no slower than the pinned one. Run it alone: other
jobs on the machine change every figure. Writes docs/benchmarks/under_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance  # noqa: E402

MODEL = ROOT / ".cache" / "bench" / "efficientnet_lite0.64.onnx"
RESULT = ROOT / "docs" / "benchmarks" / "under_load.json"
SKIP = 5  # first search steps left out of the median (allocation, thread start-up)


def worker(setting: str, steps: int, out: Path) -> None:
    """One search; prints the median search step in milliseconds as JSON."""
    import onnxmtl
    from onnxmtl.training import SearchConfig

    cores = os.cpu_count() or 1
    config = SearchConfig().with_options(
        batch_size=16,
        warmup_steps=3,
        search_steps=steps,
        post_train_steps=0,
        batchnorm_batches=0,
        eval_batches=1,
        derive="argmax",
        threads=cores if setting == "pinned" else 0,
        data={"count": 1024},
    )
    onnxmtl.search(MODEL, "fashion-locate", out, config=config, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in rows if r["phase"] == "search"]
    gaps = [b - a for a, b in zip(times, times[1:])][SKIP:]
    print(json.dumps({"step_ms": 1000 * statistics.median(gaps)}))


def _timed(setting: str, copies: int, steps: int) -> list[float]:
    """The median step (ms) of each of `copies` searches started together."""
    with tempfile.TemporaryDirectory(prefix="under-load-") as tmp:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", setting, "--steps", str(steps)]
                + ["--out", str(Path(tmp) / f"run{i}")],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for i in range(copies)
        ]
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a {setting} worker failed; run it alone to see why")
    return [json.loads(o.strip().splitlines()[-1])["step_ms"] for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--worker", choices=("pinned", "shared"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out)
        return
    if not MODEL.exists():
        raise SystemExit(f"{MODEL} is missing: `make demo` (or benchmarks/evidence.py) makes it")
    cases = {}
    for setting in ("pinned", "shared"):
        alone = _timed(setting, 1, args.steps)[0]
        pair = _timed(setting, 2, args.steps)
        cases[setting] = {
            "alone_ms": round(alone, 1),
            "beside_another_ms": [round(t, 1) for t in pair],
            "slowdown": round(max(pair) / alone, 2),
        }
        print(
            f"{setting:7s} alone {alone:7.1f} ms   two at once {pair[0]:7.1f} / {pair[1]:7.1f} ms"
            f"   slowdown {max(pair) / alone:.2f}x",
            flush=True,
        )
    ratio = cases["shared"]["alone_ms"] / cases["pinned"]["alone_ms"]
    print(f"shared alone / pinned alone: {ratio:.2f}x (goal: slowdown <= 2.5x, alone <= 1.0x)")
    result = {
        **provenance("under_load.py", "every core unless the fair share gives some up"),
        "results": {
            "steps": args.steps,
            "cases": cases,
            "shared_alone_vs_pinned_alone": round(ratio, 2),
        },
    }
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
