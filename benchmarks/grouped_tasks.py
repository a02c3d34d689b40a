"""Would running the tasks' copies together make a search step cheaper than separate runs?

    .venv/bin/python benchmarks/grouped_tasks.py [--repeats 7] [--threads 2]

A soft search step runs, for every task, that task's copy of each unit. Issue 19 suggested
running the T copies of a unit as one grouped convolution over the stacked inputs. This
script times the best case of that idea on the CPU, one training step (forward, backward) of
torchvision's MobileNetV2 features for 3 tasks, batch 4, 128x128, three ways, interleaved in
one process (`interleaved_times`, medians):

- apart: the three copies one after the other (what three single-task steps compute);
- grouped: one network whose every layer holds the three copies side by side: the first
  convolution with 3x the output channels (the image is common to all tasks), every later
  one with 3x the channels and 3x the groups, every BatchNorm over 3x the channels, so each
  operator runs once for all tasks on channel-stacked activations;
- vmap: `torch.func.vmap` over the three copies' stacked parameters (torch's ensembling),
  whose batching rule turns each convolution into a grouped one.

All three compute the same function (the script checks the grouped network's output against
the copies' within 1e-4). A ratio near 1 means the grouped kernels cost what the separate
ones do: the step is bound by the convolutions' arithmetic, not by the number of operators,
and no interpreter change removes that work.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxmtl.benchmark.timing import interleaved_times  # noqa: E402

TASKS, BATCH, SIZE = 3, 4, 128


def grouped(copies: list[nn.Module]) -> nn.Module:
    """One network computing every copy of `copies` side by side on channel-stacked values."""
    wide = copy.deepcopy(copies[0])
    first = True  # the first convolution reads the image, common to every copy

    def widen(stacked: nn.Module, parts: list[nn.Module]) -> None:
        nonlocal first
        for name, child in stacked.named_children():
            same = [dict(p.named_children())[name] for p in parts]
            if isinstance(child, nn.Conv2d):
                t = len(parts)
                groups = child.groups if first else child.groups * t
                cin = child.in_channels if first else child.in_channels * t
                new = nn.Conv2d(
                    cin,
                    child.out_channels * t,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    groups=groups,
                    bias=child.bias is not None,
                )
                with torch.no_grad():
                    new.weight.copy_(torch.cat([c.weight for c in same]))
                first = False
                setattr(stacked, name, new)
            elif isinstance(child, nn.BatchNorm2d):
                new_norm = nn.BatchNorm2d(child.num_features * len(parts))
                with torch.no_grad():
                    new_norm.weight.copy_(torch.cat([c.weight for c in same]))
                    new_norm.bias.copy_(torch.cat([c.bias for c in same]))
                setattr(stacked, name, new_norm)
            else:
                widen(child, same)

    widen(wide, copies)
    return wide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    copies = [torchvision.models.mobilenet_v2().features.train() for _ in range(TASKS)]
    wide = grouped(copies).train()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = torch.cat([c(x) for c in copies], dim=1)
        got = wide(x)
    error = float((got - expected).abs().max() / expected.abs().max())
    if error > 1e-4:
        sys.exit(f"the grouped network differs from the copies: relative error {error:.2e}")

    params, buffers = stack_module_state(copies)
    skeleton = copy.deepcopy(copies[0]).to("meta")

    def one(p: dict, b: dict, image: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (image,))

    def apart() -> None:
        for c in copies:
            c(x).square().mean().backward()

    def together() -> None:
        wide(x).square().mean().backward()

    def mapped() -> None:
        vmap(one, in_dims=(0, 0, None), randomness="different")(
            params, buffers, x
        ).square().mean().backward()

    times = interleaved_times(
        {"apart": apart, "grouped": together, "vmap": mapped}, args.repeats, warmup=2
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"## {TASKS} copies of MobileNetV2's features, one training step, batch {BATCH}, "
        f"{SIZE}x{SIZE}, {args.threads} threads, torch {torch.__version__}\n"
    )
    print("| way | step ms | apart / way |")
    print("|---|---|---|")
    for way, seconds in med.items():
        print(f"| {way} | {seconds * 1000:.0f} | {med['apart'] / seconds:.2f}x |")
    print(f"\ngrouped output vs the copies': relative error {error:.1e}")


if __name__ == "__main__":
    main()
