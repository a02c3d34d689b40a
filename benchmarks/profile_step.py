"""Where a search step's time goes, and the floor it sets on any speed-up.

    .venv/bin/python benchmarks/profile_step.py [--backbone mobilenet_v2] [--repeats 3]

Profiles compile_search.py's steps (3 tasks, batch 4, 128x128, 1x1 conv heads) with
torch.profiler on the CPU: 3 single-task steps, a soft search step mixing the branches'
outputs and one mixing their parameters (`soft_mix: parameters`; also in the space without
skip projections, `skip_projection='none'`), and a hard one. Each
operator's self time is put in one of four groups: convolution (forward and backward),
normalisation (forward and backward), the soft mix of the branches (elementwise mul and add)
and everything else (autograd, allocation, optimiser, Python dispatch). The convolution and
normalisation kernels are work any implementation of the same step must do; their sum is the
floor of the step's time on this machine, so `floor / step` bounds how much faster any rewrite
of the interpreter (fused or grouped branches included) could make the step, unless it
computes fewer convolutions. Run it alone: ratios of a shared CPU mean nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.compile_search import make_step  # noqa: E402
from onnxmtl.benchmark.timing import median_seconds  # noqa: E402

GROUPS = {
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_backward"),
    "normalisation": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "mix": ("aten::mul", "aten::add", "aten::addcmul"),
}
CONFIGS = ("single", "soft", "soft-parameters", "soft-parameters-identity-skips", "hard")


def grouped_ms(step: Callable[[], None], repeats: int) -> dict[str, float]:
    """Milliseconds of self CPU time per step, by group, over `repeats` profiled steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    out = dict.fromkeys([*GROUPS, "other"], 0.0)
    for event in prof.key_averages():
        group = next((g for g, names in GROUPS.items() if event.key in names), "other")
        out[group] += event.self_cpu_time_total / 1000 / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {c: make_step(args.backbone, c) for c in CONFIGS}
    for step in steps.values():  # warm-up: allocator, mkldnn primitives
        step()
        step()
    wall = {c: median_seconds(s, 3 * args.repeats) for c, s in steps.items()}
    groups = {c: grouped_ms(s, args.repeats) for c, s in steps.items()}
    print(
        f"## Where a step's time goes: {args.backbone}, 3 tasks, batch 4, 128x128, "
        f"{args.threads} threads, torch {torch.__version__}\n"
    )
    print(
        "| step | wall ms | convolution ms | normalisation ms | mix ms | other ms "
        "| floor ms (conv + norm) | floor / wall | floor / 3 single's floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    single_floor = groups["single"]["convolution"] + groups["single"]["normalisation"]
    for c in CONFIGS:
        g = groups[c]
        floor = g["convolution"] + g["normalisation"]
        print(
            f"| {c} | {wall[c] * 1000:.0f} | {g['convolution']:.0f} | {g['normalisation']:.0f} "
            f"| {g['mix']:.0f} | {g['other']:.0f} | {floor:.0f} | {floor / wall[c] / 1000:.2f} "
            f"| {floor / single_floor:.2f} |"
        )
    print(
        "\nA rewrite that keeps the step's convolutions and normalisations can at best bring "
        "the step down to its floor; the profiler's own overhead makes the groups' sum exceed "
        "the wall time slightly."
    )


if __name__ == "__main__":
    main()
