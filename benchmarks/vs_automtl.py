"""onnxmtl against AutoMTL's own code, timed side by side in fresh processes.

    .venv/bin/python benchmarks/vs_automtl.py [--rounds 3] [--threads 2] [--max-load 1.5]
        [--automtl ../shared/reference/automtl-code] [--json OUT.json]

The same work on each side: compile (AutoMTL from its prototxt; onnxmtl load + compile from
the ONNX file of the same torchvision backbone) for ResNet-34, MobileNetV2 and MNASNet; one
soft and one hard search step (MobileNetV2, segmentation, depth and normals with 1x1 conv
heads, batch 4, 128x128); inference of all three tasks at batch 1, 128x128 (AutoMTL: one
eager call per task, as its README does; onnxmtl: the derived model in onnxruntime, for two
late-branching policies and all-shared) for MobileNetV2 and DeepLab-ResNet34. The compile
rows are followed by onnxmtl's floor for each backbone (`compile_search.weight_floor`: read
and parse the file, copy its weights once and clone them per task, timed in turn with load +
compile), the part of load + compile that no faster code could skip. The soft step is timed
twice on onnxmtl's side, mixing the branches' outputs (`soft_mix: outputs`, as AutoMTL does)
and their parameters (`soft_mix: parameters`, the default), and is followed by three
single-task steps of the same backbone and heads, timed in turn with them: a soft step for
three tasks that costs less than training the three single-task models for a step would have
to skip convolutions, so AutoMTL's soft step over these is the most any soft step could gain.
AutoMTL's hard step trains the argmax of its logits (all equal at the start, so every task
takes the shared branch of every layer), one task after the other; onnxmtl's samples a
branch per task and unit. The last row times the work AutoMTL's hard step does, the
all-shared policy's step for the three tasks, on onnxmtl's side (its shared units run once
for all tasks).

Each measurement runs in a fresh process, AutoMTL and onnxmtl alternately (A, B, B, A, A,
B...), and waits for the 1-minute load average to fall to --max-load first (up to
--settle seconds). The table gives medians over rounds, the load average before each side's
measurements, and AutoMTL / onnxmtl ratios; ratios are withheld, with the reason, when any
measurement started above --max-load: on this 2-core machine kind, torch code made of small
operators slows by 1-170x when another process computes.

AutoMTL needs its own environment (protobuf 3.20); it is built once under .cache/automtl-venv
(torch 2.13.0 CPU, protobuf 3.20.3, numpy) from the local package index. Run by hand, alone,
not in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AUTOMTL_CODE = ROOT.parent / "shared" / "reference" / "automtl-code"
AUTOMTL_VENV = ROOT / ".cache" / "automtl-venv"
AUTOMTL_PACKAGES = ["torch==2.13.0", "protobuf==3.20.3", "numpy"]

COMPILED = ("resnet34", "mobilenet_v2", "mnasnet1_0")
INFERRED = ("mobilenet_v2", "deeplab_resnet34")
STEP_REPEATS, STEP_WARMUP = 5, 2
INFER_REPEATS = {"mobilenet_v2": 20, "deeplab_resnet34": 5}
COMPILE_REPEATS = 5


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- onnxmtl's side (run in a fresh process by `--worker`) -------------------------------------
def ours_compile() -> dict:
    import onnxmtl
    from benchmarks.compile_search import backbone, tasks, weight_floor
    from onnxmtl.benchmark.timing import interleaved_times
    from onnxmtl.compiler import compile

    out = {}
    for name in COMPILED:
        path = backbone(name, 224)
        work = {
            name: lambda p=path: compile(onnxmtl.load(p), tasks()),
            f"{name} floor": weight_floor(path, len(tasks())),
        }
        for key, times in interleaved_times(work, COMPILE_REPEATS, warmup=1).items():
            out[key] = {"median": statistics.median(times), "all": times}
    return out


def ours_step(configs: list[str]) -> dict:
    """Seconds of one step of each of `configs` (`compile_search.STEP_CONFIGS`), timed in
    turn within every repeat."""
    from benchmarks.compile_search import make_step
    from onnxmtl.benchmark.timing import interleaved_times

    steps = {c: make_step("mobilenet_v2", c) for c in configs}
    times = interleaved_times(steps, STEP_REPEATS, STEP_WARMUP)
    return {c: {"median": statistics.median(t), "all": t} for c, t in times.items()}


def ours_infer(threads: int) -> dict:
    """Median ms of each derived model in onnxruntime, timed in turn within every repeat."""
    import numpy as np

    import onnxmtl
    from benchmarks.derive_export import backbone, policies, tasks
    from onnxmtl.benchmark.bench import bound_call
    from onnxmtl.benchmark.timing import interleaved_times
    from onnxmtl.compiler import SHARED, compile
    from onnxmtl.derived import derive, perturb_weights
    from onnxmtl.exporter import export
    from onnxmtl.runtime import session

    out = {}
    folder = Path(tempfile.mkdtemp(prefix="vs_automtl."))
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128), dtype=np.float32)
    # idle sessions must not busy-wait while another one is timed
    for name in INFERRED:
        model = compile(onnxmtl.load(backbone(name)), tasks()).eval()
        for u, branches in enumerate(model.units):
            perturb_weights(branches.specific, seed=u)
        chosen = {**policies(model), "all-shared": model.uniform_policy(SHARED)}
        calls = {}
        for label, policy in chosen.items():
            path = folder / f"{name}.{len(calls)}.onnx"
            export(derive(model, policy).eval(), path)
            sess = session(str(path), ["CPUExecutionProvider"], threads, spinning=False)
            calls[label] = bound_call(sess, {sess.get_inputs()[0].name: x})[0]
        repeats = INFER_REPEATS[name]
        times = interleaved_times(calls, repeats, warmup=3)
        out[name] = {
            label: {"median": 1e3 * statistics.median(t), "all": [1e3 * v for v in t]}
            for label, t in times.items()
        }
    return out


def worker(what: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    before = loadavg()
    start = time.time()
    if what == "compile":
        res = ours_compile()
    elif what == "step":
        from benchmarks.compile_search import STEP_CONFIGS

        res = ours_step(list(STEP_CONFIGS))
    else:
        res = ours_infer(threads)
    result = {"loadavg_before": before, "wall_s": time.time() - start, "res": res}
    print(json.dumps(result))


# -- AutoMTL's side ---------------------------------------------------------------------------
def automtl_python() -> Path:
    """AutoMTL's interpreter, creating its environment the first time."""
    python = AUTOMTL_VENV / "bin" / "python"
    stamp = AUTOMTL_VENV / ".installed"
    if not stamp.exists():
        print(f"building AutoMTL's environment in {AUTOMTL_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(AUTOMTL_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + AUTOMTL_PACKAGES,
            check=True,
        )
        stamp.touch()
    return python


def automtl_args(what: str) -> list[str]:
    if what == "step":
        return ["step", "soft,hard", str(STEP_REPEATS), str(STEP_WARMUP)]
    if what == "infer":
        return ["infer", *(str(INFER_REPEATS[n]) for n in INFERRED)]
    return ["compile"]


def normalise_automtl(what: str, raw: dict) -> dict:
    """AutoMTL's JSON in the worker's shape: medians in s (compile, step) or ms (infer)."""
    res = raw["res"]
    if what == "infer":
        res = {
            n: {"3 calls, eager": {"median": r["median_ms"], "all": r["all_ms"]}}
            for n, r in res.items()
        }
    else:
        res = {k: {"median": r["median_s"], "all": r["all_s"]} for k, r in res.items()}
    return {"loadavg_before": float(raw["loadavg_before"][0]), "wall_s": raw["wall_s"], "res": res}


# -- the driver -------------------------------------------------------------------------------
def settle(max_load: float, patience: float) -> float:
    """Wait until the 1-minute load average is at most `max_load` (or `patience` s passed)."""
    deadline = time.time() + patience
    while loadavg() > max_load and time.time() < deadline:
        time.sleep(5)
    return loadavg()


def measure(side: str, what: str, args: argparse.Namespace) -> dict:
    settle(args.max_load, args.settle)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if side == "automtl":
        cmd = [str(automtl_python()), str(args.automtl / "bench_automtl.py"), *automtl_args(what)]
    else:
        cmd = [sys.executable, __file__, "--worker", what, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{side} {what} failed:\n{proc.stderr[-3000:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return normalise_automtl(what, raw) if side == "automtl" else raw


def rows(runs: dict) -> list[tuple[str, str, str, str]]:
    """(work, unit, AutoMTL key, onnxmtl key) for every line of the table."""
    out = [(f"compile {n}", "s", n, n) for n in COMPILED]
    out += [(f"compile {n}: onnxmtl's floor", "s", n, f"{n} floor") for n in COMPILED]
    out.append(("search step soft, mobilenet_v2, onnxmtl's soft_mix: outputs", "s", "soft", "soft"))
    out.append(("search step hard, mobilenet_v2", "s", "hard", "hard"))
    out.append(
        (
            "search step soft, onnxmtl's soft_mix: parameters (default)",
            "s",
            "soft",
            "soft-parameters",
        )
    )
    out.append(
        (
            "search step soft, onnxmtl's soft_mix: parameters, skip_projection: none",
            "s",
            "soft",
            "soft-parameters-identity-skips",
        )
    )
    out.append(("search step soft: onnxmtl's 3 single-task steps, a floor", "s", "soft", "single"))
    out.append(("search step hard: onnxmtl's step of the all-shared policy", "s", "hard", "shared"))
    infer = runs["ours"]["infer"][0]["res"]
    for name in INFERRED:
        for label in infer[name]:
            out.append((f"inference {name}: {label}", "ms", name, f"{name}/{label}"))
    return out


def pick(result: dict, what: str, key: str) -> float:
    res = result["res"]
    if what == "infer":
        name, _, label = key.partition("/")
        return res[name][label or "3 calls, eager"]["median"]
    return res[key]["median"]


def table(runs: dict, max_load: float) -> str:
    kinds = {"compile": "compile", "search": "step", "inference": "infer"}
    lines = [
        "| work | AutoMTL | load avg before | onnxmtl | load avg before | AutoMTL / onnxmtl |",
        "|---|---|---|---|---|---|",
    ]
    withheld = []
    for work, unit, a_key, o_key in rows(runs):
        what = kinds[work.split()[0]]
        a = [pick(r, what, a_key) for r in runs["automtl"][what]]
        o = [pick(r, what, o_key) for r in runs["ours"][what]]
        loads = {
            side: [r["loadavg_before"] for r in runs[side][what]] for side in ("automtl", "ours")
        }
        busy = max(loads["automtl"] + loads["ours"]) > max_load
        ratio = "withheld" if busy else f"{statistics.median(a) / statistics.median(o):.2f}x"
        if busy:
            withheld.append(work)
        lines.append(
            f"| {work} | {statistics.median(a):.3g} {unit} | "
            f"{'/'.join(f'{v:.2f}' for v in loads['automtl'])} | {statistics.median(o):.3g} {unit} "
            f"| {'/'.join(f'{v:.2f}' for v in loads['ours'])} | {ratio} |"
        )
    if withheld:
        lines.append(
            f"\nRatios withheld for {len(withheld)} rows: a measurement started with the load "
            f"average above {max_load} (another process was computing); run again alone."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--settle", type=float, default=120.0, help="max s to wait for quiet")
    parser.add_argument("--automtl", type=Path, default=AUTOMTL_CODE)
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--worker", choices=["compile", "step", "infer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    if not (args.automtl / "bench_automtl.py").exists():
        sys.exit(f"{args.automtl}: AutoMTL's code with bench_automtl.py not found (--automtl).")
    automtl_python()
    from benchmarks.compile_search import backbone as compile_backbone
    from benchmarks.derive_export import backbone as infer_backbone

    for name in COMPILED:  # exports happen before any timing
        compile_backbone(name, 224)
    compile_backbone("mobilenet_v2", 128)
    for name in INFERRED:
        infer_backbone(name)
    runs: dict = {
        side: {w: [] for w in ("compile", "step", "infer")} for side in ("automtl", "ours")
    }
    started = time.strftime("%Y-%m-%d %H:%M")
    for r in range(args.rounds):
        order = ("automtl", "ours") if r % 2 == 0 else ("ours", "automtl")
        for what in ("compile", "step", "infer"):
            for side in order:
                result = measure(side, what, args)
                runs[side][what].append(result)
                print(
                    f"round {r + 1}/{args.rounds} {what:7s} {side:7s} "
                    f"load {result['loadavg_before']:.2f} wall {result['wall_s']:.1f} s",
                    file=sys.stderr,
                )
    print(
        f"## onnxmtl vs AutoMTL, side by side ({started}; {args.rounds} rounds, "
        f"{args.threads} threads, medians over rounds)\n"
    )
    print(table(runs, args.max_load))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
