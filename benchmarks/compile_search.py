"""Compiler benchmark: compile time, one search step (soft and hard) and its peak memory.

    .venv/bin/python benchmarks/compile_search.py [--repeats 5] [--threads 2]

Each table is measured side by side in one run on this machine. Against AutoMTL, only
benchmarks/vs_automtl.py's interleaved runs of both codes give ratios (figures measured at
other times on this VM drift too much to divide by). Search steps use 3 tasks (segmentation,
depth, normals) with 1x1 conv heads, batch 4, 128x128 inputs, SGD on the weights and Adam on
the policy logits; the baseline is 3 single-task steps (forward, backward, update) of the plain
lowered backbone, each with its own copy and head. Peak memory is sampled from the process's
resident set size in a fresh subprocess per configuration; "step" is the peak above the RSS
before the steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
sys.path.insert(0, str(ROOT))

import onnxmtl  # noqa: E402
from converters import export_backbones  # noqa: E402
from onnxmtl.benchmark.timing import interleaved_medians, median_seconds  # noqa: E402
from onnxmtl.compiler import compile  # noqa: E402
from onnxmtl.lower import lower  # noqa: E402
from onnxmtl.tasks import Task, loss_fn  # noqa: E402

BACKBONES = ("resnet34", "mobilenet_v2", "mnasnet1_0")
BATCH, SIZE = 4, 128
DEVICE = torch.device("cpu")  # --device


def tasks() -> list[Task]:
    return [
        Task("seg", "segmentation", 13, head="conv1x1"),
        Task("depth", "depth", head="conv1x1"),
        Task("normal", "normals", head="conv1x1"),
    ]


def backbone(name: str, size: int) -> Path:
    return export_backbones.export_backbone(
        name, "legacy17", CACHE, file_name=f"{name}.{size}.onnx", size=size
    )


def weight_floor(path: Path, copies: int) -> Callable[[], object]:
    """The work no compiler of the ONNX file at `path` can skip, as a zero-argument function:
    read the file, parse it, copy the weights that the loaded backbone keeps (not a dropped
    classifier's) once into writable tensors, and clone them once per task (`copies`), the
    task-specific branches' own weights. AutoMTL's compile makes the same 1 + `copies` weight
    sets (a random initialisation, then a deep copy per task) but reads nothing; load +
    compile never takes less than this, so where it costs as much as AutoMTL's whole compile,
    no onnxmtl compile can be faster."""
    kept = set(onnxmtl.load(path).model.graph.initializers)

    def work() -> object:
        proto = onnx.load_from_string(path.read_bytes())
        weights = [
            torch.from_numpy(numpy_helper.to_array(t).copy())
            for t in proto.graph.initializer
            if t.name in kept
        ]
        return weights, [[w.clone() for w in weights] for _ in range(copies)]

    return work


def compile_table(repeats: int) -> None:
    print("## Compile time, 3 tasks (median of repeats, after one warm-up)\n")
    print(
        "| backbone | units | load s | compile s (lower + build) | load + compile s "
        "| floor s (read, parse, 4 weight copies) |"
    )
    print("|---|---|---|---|---|---|")
    for name in BACKBONES:
        path = backbone(name, 224)
        load_s = median_seconds(lambda p=path: onnxmtl.load(p), repeats, warmup=1)
        graph = onnxmtl.load(path)
        compile_s = median_seconds(lambda g=graph: compile(g, tasks()), repeats, warmup=1)
        both = median_seconds(lambda p=path: compile(onnxmtl.load(p), tasks()), repeats, warmup=1)
        floor = median_seconds(weight_floor(path, len(tasks())), repeats, warmup=1)
        print(
            f"| {name} | {len(graph.units)} | {load_s:.3f} | {compile_s:.3f} | {both:.3f} "
            f"| {floor:.3f} |"
        )
    print()


def targets(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "seg": torch.randint(0, 13, (BATCH, SIZE, SIZE), generator=gen),
        "depth": torch.rand(BATCH, 1, SIZE, SIZE, generator=gen) + 0.5,
        "normal": torch.randn(BATCH, 3, SIZE, SIZE, generator=gen),
    }


STEP_CONFIGS = (
    "single",
    "soft",
    "soft-parameters",
    "soft-parameters-identity-skips",
    "hard",
    "shared",
)


def make_step(name: str, config: str):
    """A zero-argument function running one training step of `config` (one of
    `STEP_CONFIGS`: 3 single-task steps, a search step in soft mode mixing the branches'
    outputs or their parameters (the latter also in the space without skip projections,
    `skip_projection='none'`), in hard mode, or the all-shared model's step)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).to(DEVICE)
    y = {k: v.to(DEVICE) for k, v in targets(gen).items()}
    graph = onnxmtl.load(backbone(name, SIZE))
    ts = tasks()
    if config == "single":
        channels = graph.feature_shapes[-1][1]
        models = []
        for task in ts:
            net = (
                torch.nn.ModuleDict(
                    {"body": lower(graph), "head": torch.nn.Conv2d(channels, task.num_outputs, 1)}
                )
                .to(DEVICE)
                .train()
            )
            models.append((task, net, torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)))

        def step() -> None:
            for task, net, opt in models:
                out = net["head"](net["body"](x))
                out = torch.nn.functional.interpolate(out, size=(SIZE, SIZE), mode="bilinear")
                opt.zero_grad()
                loss_fn(task)(out, y[task.name]).backward()
                opt.step()
            sync()

        return step
    projection = "none" if config.endswith("identity-skips") else "grouped"
    model = compile(graph, ts, skip_projection=projection).to(DEVICE).train()
    weights = torch.optim.SGD(model.weight_parameters(), lr=1e-3, momentum=0.9)
    policy = torch.optim.Adam(model.policy_parameters(), lr=0.01)

    mode = "fixed" if config == "shared" else config.split("-")[0]
    model.soft_mix = "parameters" if config.startswith("soft-parameters") else "outputs"

    def step() -> None:
        out = model(x, mode=mode, tau=5.0)
        loss = sum(loss_fn(t)(out[t.name], y[t.name]) for t in ts)
        weights.zero_grad()
        policy.zero_grad()
        loss.backward()
        weights.step()
        policy.step()
        sync()

    return step


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def cuda_memory(name: str, config: str) -> dict:
    """Peak CUDA memory allocated over two steps, after one warm-up step, in-process."""
    gc.collect()
    torch.cuda.empty_cache()
    step = make_step(name, config)
    step()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for _ in range(2):
        step()
    peak = torch.cuda.max_memory_allocated()
    del step
    torch.cuda.empty_cache()
    return {"base": base, "peak": peak}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def memory_worker(name: str, config: str, threads: int) -> None:
    torch.set_num_threads(threads)
    step = make_step(name, config)
    step()  # optimiser state and allocator warm-up
    base = rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    for _ in range(2):
        step()
    done.set()
    thread.join()
    print(json.dumps({"base": base, "peak": peak[0]}))


def measure_memory(name: str, config: str, threads: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-worker", name, config, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_table(repeats: int, threads: int) -> None:
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"{threads} threads"
    print(f"## One search step: 3 tasks, batch {BATCH}, {SIZE}x{SIZE}, 1x1 conv heads, {where}\n")
    print(
        "| backbone | 3 single-task steps s | soft s | soft, parameters mixed s | hard s "
        "| soft / 3 single | soft, parameters / 3 single "
        "| soft, parameters, identity skips only / 3 single | hard / 3 single "
        "| fixed all-shared / 3 single |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in ("mobilenet_v2", "resnet34"):
        times = interleaved_medians(
            {c: make_step(name, c) for c in STEP_CONFIGS}, repeats, warmup=2
        )
        single = times["single"]
        print(
            f"| {name} | {single:.3f} | {times['soft']:.3f} | {times['soft-parameters']:.3f} "
            f"| {times['hard']:.3f} | {times['soft'] / single:.2f} "
            f"| {times['soft-parameters'] / single:.2f} "
            f"| {times['soft-parameters-identity-skips'] / single:.2f} "
            f"| {times['hard'] / single:.2f} "
            f"| {times['shared'] / single:.2f} |"
        )
        rows.append(name)
    kind = "CUDA memory allocated" if DEVICE.type == "cuda" else "resident set size"
    print(f"\n## Peak memory of a search step ({kind}, fresh process each on the CPU)\n")
    print(
        "| backbone | config | before step MB | peak MB | step MB | peak / single | step / single |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in rows:
        mem = {
            c: cuda_memory(name, c) if DEVICE.type == "cuda" else measure_memory(name, c, threads)
            for c in ("single", "soft", "soft-parameters", "hard")
        }
        single = mem["single"]
        for config, m in mem.items():
            step_mb = (m["peak"] - m["base"]) / 2**20
            single_step = (single["peak"] - single["base"]) / 2**20
            print(
                f"| {name} | {config} | {m['base'] / 2**20:.0f} | {m['peak'] / 2**20:.0f} | "
                f"{step_mb:.0f} | {m['peak'] / single['peak']:.2f} | "
                f"{step_mb / max(single_step, 1e-9):.2f} |"
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-worker", nargs=2, metavar=("BACKBONE", "CONFIG"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["compile", "step"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (search steps only)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(*args.memory_worker, args.threads)
        return
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    if "compile" not in args.skip:
        compile_table(args.repeats)
    if "step" not in args.skip:
        step_table(args.repeats, args.threads)


if __name__ == "__main__":
    main()
