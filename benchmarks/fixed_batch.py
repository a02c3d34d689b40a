"""What a freed batch costs: a training step on a batch-1 file whose batch load made symbolic,
against the same model exported with a dynamic batch.

    .venv/bin/python benchmarks/fixed_batch.py [--repeats 15] [--batch 8] [--threads 2]

For each hybrid attention backbone whose batch-1 file loads (LeViT, EdgeNeXt, EfficientViT,
EfficientFormer v2, MobileViT;
random timm weights, the corpus's `legacy17-b1` and `legacy17` exports, exported on first use
into .cache/corpus), both files are loaded and compiled for two tasks (10-class
classification, 4-class segmentation with a 3x3-conv head); one step is a forward in soft mode
(parameters mixed), the two losses, backward and an SGD update. The two steps are timed
interleaved in one process, so the ratio is measured side by side. The rewrite keeps the
file's graph and only turns the batch in Reshape targets into -1, so the ratio should sit at
1 within noise. Both files are cut at the same feature value. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxmtl  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from converters import export_backbones  # noqa: E402
from converters.export_backbones import STATIC_BATCH  # noqa: E402
from onnxmtl.benchmark.timing import interleaved_medians  # noqa: E402
from onnxmtl.compiler import compile  # noqa: E402
from onnxmtl.tasks import Task, loss_fn  # noqa: E402

CORPUS = ROOT / ".cache" / "corpus"
RESULT = ROOT / "docs" / "benchmarks" / "fixed_batch.json"
BACKBONES = (
    "timm_levit_128s",
    "timm_edgenext_xx_small",
    "timm_efficientvit_b0",
    "timm_efficientformerv2_s0",
    "timm_mobilevit_xxs",
)
TASKS = [Task("cls", "classification", 10), Task("seg", "segmentation", 4, head="conv")]


def make_step(path: Path, batch: int, features: str | list[str] = "auto"):
    """One soft training step of `path`'s supermodel (cut at `features`) on a fixed random
    batch; and the features it was cut at."""
    graph = onnxmtl.load(path, features=features)
    model = compile(graph, TASKS, seed=0)
    size = graph.input_shape[2]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=1e-3)
    model.train()
    with torch.no_grad():
        seg_shape = model(x, mode="soft", tau=1.0)["seg"].shape
    targets = {
        "cls": torch.randint(0, 10, (batch,), generator=gen),
        "seg": torch.randint(0, 4, (batch, *seg_shape[2:]), generator=gen),
    }

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(x, mode="soft", tau=1.0)
        sum(loss_fn(t)(out[t.name], targets[t.name]) for t in TASKS).backward()
        optimizer.step()

    return step, graph.features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in BACKBONES:
        dynamic = export_backbones.export_backbone(name, "legacy17", CORPUS)
        freed = export_backbones.export_backbone(name, STATIC_BATCH, CORPUS)
        # both cut where the batch-1 file's automatic cut falls (the dynamic file's own may
        # fall elsewhere: a token-shaped backbone has few (N, C, H, W) values)
        freed_step, features = make_step(freed, args.batch)
        steps = {"dynamic": make_step(dynamic, args.batch, features)[0], "freed": freed_step}
        ms = {k: 1000 * v for k, v in interleaved_medians(steps, args.repeats, 2).items()}
        rows.append(
            {
                "backbone": name,
                "dynamic export (ms)": round(ms["dynamic"], 1),
                "freed batch-1 file (ms)": round(ms["freed"], 1),
                "ratio": round(ms["freed"] / ms["dynamic"], 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    record = {
        **provenance("fixed_batch.py", f"{args.threads} torch threads"),
        "results": {"rows": rows},
    }
    RESULT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
