"""What the tasks' losses tell the policy when the search starts, against the warm-up's length.

    .venv/bin/python benchmarks/policy_signal.py [--data fashion-locate]
        [--config configs/demo_cpu_hard.yaml] [--at 40 120 400] [--draws 16] [--out .cache/signal]

One warm-up (the config's, lengthened to the largest --at) is paused at each --at step. There,
with the policy logits where a search starts them, the gradient of the weighted task loss on
the logits is taken on --draws train2 batches, each with its own branch sample at the search's
first temperature, as a search's policy step takes it. Per (task, unit) it is split into two
directions: own copy against shared (specific minus shared) and skip against keeping the
unit (skip minus the mean of the other two). A direction carries signal where its mean over
draws is large against its spread: the table gives the median of |mean| / std over the (task,
unit) pairs and the share of pairs whose mean is more than two standard errors from 0 (for
pure noise about 0.674 / sqrt(draws) and 5%). Beside it, how far the task copies have moved
from the shared weights (per unit the largest relative L2 distance; median and largest over
units): the copies start as the shared weights, and until they differ, a task's loss cannot
prefer its copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.evidence import backbone  # noqa: E402
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC  # noqa: E402
from onnxmtl.compiler.supermodel import SuperModel  # noqa: E402
from onnxmtl.data import load_dataset  # noqa: E402
from onnxmtl.pipeline.stages import compile_for_run  # noqa: E402
from onnxmtl.training import SearchConfig, Trainer  # noqa: E402
from onnxmtl.training.session import Session  # noqa: E402


def copy_distance(model: SuperModel) -> list[float]:
    """Per unit, the largest relative L2 distance of a task's copy from the shared weights."""
    out = []
    for unit in model.units:
        shared = torch.cat([p.detach().flatten() for p in unit.shared.parameters()])
        far = 0.0
        for copy in unit.specific:
            own = torch.cat([p.detach().flatten() for p in copy.parameters()])
            far = max(far, float((own - shared).norm() / shared.norm().clamp_min(1e-12)))
        out.append(far)
    return out


def task_gradients(run: Session, tau: float, mode: str, draws: int) -> torch.Tensor:
    """(draws, tasks, units, 3): the weighted task loss's gradient on the policy logits, one
    train2 batch and one branch sample per draw."""
    logits = run.model.policy_logits
    grads = []
    for _ in range(draws):
        images, targets = run.streams["train2"].next()
        loss = run.weighting.static @ run.task_losses(images, targets, mode, tau)
        (grad,) = torch.autograd.grad(loss, logits)
        grads.append(grad.detach().clone())
    return torch.stack(grads)


def signal(direction: torch.Tensor) -> tuple[float, float]:
    """Median |mean| / std over the (task, unit) pairs, and the share of pairs whose mean is
    more than two standard errors from zero; `direction` is (draws, pairs)."""
    mean, std = direction.mean(0), direction.std(0).clamp_min(1e-20)
    ratio = (mean.abs() / std).numpy()
    t_stat = ratio * np.sqrt(direction.shape[0])
    return float(np.median(ratio)), float((t_stat > 2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-locate")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo_cpu_hard.yaml"))
    parser.add_argument("--at", nargs="+", type=int, default=[40, 120, 400])
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "signal")
    args = parser.parse_args()
    stops = sorted(set(args.at))
    base = SearchConfig.load(args.config)
    config = base.with_options(seed=args.seed, warmup_steps=stops[-1], conflict_every=0)
    train = load_dataset(args.data, "train", **config.dataset.options)
    model = compile_for_run(backbone(64), train.tasks(), config)
    trainer = Trainer(model, train, config, args.out, progress=False)
    run, c = trainer.session, config.search
    has_skip = model.branch_mask[:, SKIP].bool()
    print(
        f"\n## {args.data}, seed {args.seed}, {args.draws} draws at tau {c.tau} ({c.mode}); "
        f"noise alone: median |mean|/std about {0.674 / np.sqrt(args.draws):.2f}, 5% of pairs "
        "> 2 s.e.\n"
    )
    print(
        "| warm-up steps | copy distance median / max | own copy vs shared: median "
        "|mean|/std, pairs > 2 s.e. | skip vs keep: median |mean|/std, pairs > 2 s.e. |"
    )
    print("|---|---|---|---|")
    done = 0
    for stop in stops:
        trainer.run(resume=done > 0, stop_after=stop - done)
        done = stop
        grads = task_gradients(run, c.tau, c.mode, args.draws)
        own = grads[..., SPECIFIC] - grads[..., SHARED]
        skip = grads[..., SKIP] - (grads[..., SHARED] + grads[..., SPECIFIC]) / 2
        own_ratio, own_share = signal(own.flatten(1))
        skip_ratio, skip_share = signal(skip[:, :, has_skip].flatten(1))
        far = copy_distance(model)
        print(
            f"| {stop} | {np.median(far):.4f} / {max(far):.4f} | {own_ratio:.2f}, "
            f"{own_share:.0%} | {skip_ratio:.2f}, {skip_share:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
