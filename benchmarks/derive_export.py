"""Derived-model benchmark: the exported multi-task model against all-shared, the single-task
models and PyTorch eager.

    .venv/bin/python benchmarks/derive_export.py [--repeats 30] [--threads 2] [--batch 1]

Each row is measured side by side in one run: every ONNX model of a backbone is timed in turn
within each repeat (onnxruntime, CPU provider, warm-up first), and the derived model's PyTorch
eager forward (eval mode, no_grad) is timed the same way. Tasks: segmentation (13), depth,
normals with 1x1 conv heads, 128x128 inputs, as in AutoMTL's inference figure (for a
side-by-side comparison with AutoMTL's code, see benchmarks/vs_automtl.py). Derived policies
branch late (see `policies`); task copies get slightly perturbed weights, as trained ones would
be (identical copies are merged by onnxruntime's common-subexpression elimination).
'deeplab_resnet34' is ResNet-34 with output stride 8 (layer3 and layer4 dilated instead of
strided), the DeepLab variant AutoMTL uses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
sys.path.insert(0, str(ROOT))

import onnxmtl  # noqa: E402
from converters import export_backbones  # noqa: E402
from onnxmtl.benchmark import bench  # noqa: E402
from onnxmtl.benchmark.timing import interleaved_medians  # noqa: E402
from onnxmtl.compiler import SHARED, SPECIFIC, compile  # noqa: E402
from onnxmtl.derived import derive, perturb_weights  # noqa: E402
from onnxmtl.exporter import export  # noqa: E402
from onnxmtl.tasks import Task  # noqa: E402

SIZE = 128


def tasks() -> list[Task]:
    return [
        Task("seg", "segmentation", 13, head="conv1x1"),
        Task("depth", "depth", head="conv1x1"),
        Task("normal", "normals", head="conv1x1"),
    ]


def deeplab_resnet34() -> nn.Module:
    """torchvision ResNet-34 with layer3 dilated by 2 and layer4 by 4 (output stride 8)."""
    model = export_backbones.BACKBONES["resnet34"].build()
    for layer, dilation in ((model.layer3, 2), (model.layer4, 4)):
        for block in layer:
            for conv in (block.conv1, block.conv2):
                conv.stride, conv.dilation, conv.padding = (1, 1), (dilation,) * 2, (dilation,) * 2
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return model


def backbone(name: str) -> Path:
    path = CACHE / f"{name}.{SIZE}.onnx"
    if name != "deeplab_resnet34":
        return export_backbones.export_backbone(
            name, "legacy17", CACHE, file_name=path.name, size=SIZE
        )
    if not path.exists():
        torch.manual_seed(0)
        export_backbones.export(deeplab_resnet34(), path, "legacy17", SIZE, False)
    return path


def policies(model) -> dict[str, list[list[int]]]:
    """Late-branching policies (each task gets its own copy of the last units, the shape
    AutoMTL's searches find): the last third of the units (two thirds shared), and the last
    units holding at most 15% of the MACs."""
    units = len(model.units)
    macs = [u.macs for u in model.graph.units]
    late = units - (2 * units + 2) // 3
    tail = 0
    while tail < units and sum(macs[units - tail - 1 :]) <= 0.15 * sum(macs):
        tail += 1
    return {
        label: [[SHARED] * (units - n) + [SPECIFIC] * n for _ in model.tasks]
        for label, n in (("last third of units", late), ("last 15% of MACs", tail))
    }


def measure(name: str, args: argparse.Namespace, folder: Path) -> list[dict]:
    model = compile(onnxmtl.load(backbone(name)), tasks()).eval()
    for u, branches in enumerate(model.units):
        perturb_weights(branches.specific, seed=u)
    chosen = policies(model)
    models = {
        **{f"derived ({label})": derive(model, c) for label, c in chosen.items()},
        "all-shared": derive(model, model.uniform_policy(SHARED)),
        **{f"single-{t}": derive(model, tasks=[t]) for t in model.task_names},
    }
    files = {}
    for label, derived in models.items():
        files[label] = folder / f"{name}.{label.replace(' ', '_')}.onnx"
        export(derived.eval(), files[label])
    result = bench(
        files,
        batch_sizes=[args.batch],
        provider="cpu",
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        memory=False,
    )
    p50 = result.p50_ms(args.batch)
    x = torch.randn(args.batch, 3, SIZE, SIZE)
    eager = {label: _eager(models[f"derived ({label})"], x) for label in chosen}
    eager_ms = interleaved_medians(eager, args.repeats, args.warmup)
    single = sum(v for k, v in p50.items() if k.startswith("single-"))
    rows = []
    for label in chosen:
        key = f"derived ({label})"
        rows.append(
            {
                "name": name,
                "policy": label,
                "units": len(model.units),
                "derived": p50[key],
                "all_shared": p50["all-shared"],
                "single": single,
                "eager": eager_ms[label] * 1e3,
                "macs": {k: result.models[k].macs for k in (key, "all-shared")},
                "params": {k: result.models[k].params for k in (key, "all-shared")},
            }
        )
    return rows


def _eager(model: nn.Module, x: torch.Tensor):
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "deeplab_resnet34"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for name in args.backbones for row in measure(name, args, Path(tmp))]
    print(
        f"\n## Derived model, onnxruntime CPU, {args.threads} threads, batch {args.batch}, "
        f"{SIZE}x{SIZE}, 3 tasks (p50 of {args.repeats}, interleaved)\n"
    )
    print(
        "| backbone | task-specific part | derived ms | all-shared ms | 3 single ms (sum) | "
        "derived / all-shared | derived / 3 single | MACs derived / all-shared | eager ms | "
        "eager / ORT |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        macs = list(r["macs"].values())
        print(
            f"| {r['name']} | {r['policy']} | {r['derived']:.2f} | {r['all_shared']:.2f} | "
            f"{r['single']:.2f} | {r['derived'] / r['all_shared']:.2f} | "
            f"{r['derived'] / r['single']:.2f} | {macs[0] / macs[1]:.2f} | {r['eager']:.2f} | "
            f"{r['eager'] / r['derived']:.2f} |"
        )


if __name__ == "__main__":
    main()
