"""Front-end benchmark: load + lower time for ResNet-50, and the corpus parity table.

    .venv/bin/python benchmarks/load_lower.py [--repeats 5] [--no-corpus]

Times are medians over repeats on this machine, side by side with stock onnx2torch's
`convert` on the same file where it succeeds (it fails on every dynamo export).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

import onnxmtl
from onnxmtl.lower import lower
from onnxmtl.lower.verify import verify

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / ".cache" / "corpus"
sys.path.insert(0, str(ROOT))

from converters import export_backbones  # noqa: E402
from onnxmtl.benchmark.timing import median_seconds  # noqa: E402


def load_lower_table(conv, repeats: int) -> None:
    import onnx2torch

    print("## Load + lower, ResNet-50 (median of", repeats, "runs)\n")
    print("| exporter | load (s) | lower (s) | load+lower (s) | onnx2torch.convert (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for exporter in ("dynamo", "legacy17"):
        path = conv.export_backbone("resnet50", exporter, CORPUS)
        t_load = median_seconds(lambda p=path: onnxmtl.load(p), repeats)
        graph = onnxmtl.load(path)
        t_lower = median_seconds(lambda g=graph: lower(g), repeats)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_ref = median_seconds(lambda p=path: onnx2torch.convert(str(p)), repeats)
            ref, ratio = f"{t_ref:.2f}", f"{(t_load + t_lower) / t_ref:.2f}x"
        except Exception as exc:
            ref, ratio = f"fails ({type(exc).__name__})", "-"
        print(
            f"| {exporter} | {t_load:.2f} | {t_lower:.2f} | {t_load + t_lower:.2f} "
            f"| {ref} | {ratio} |"
        )
    print()


def corpus_table(conv) -> int:
    print("## Corpus: lowered module vs onnxruntime (batch 2, seeded N(0,1) input)\n")
    print(
        "| model | exporter | opset | units | params | MACs (M) | norm "
        "| max abs diff | max rel diff | ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for name in conv.BACKBONES:
        for exporter in conv.EXPORTERS:
            path = conv.export_backbone(name, exporter, CORPUS)
            graph = onnxmtl.load(path)
            result = verify(graph)
            failures += not result.ok
            print(
                f"| {name} | {exporter} | {graph.opset} | {len(graph.units)} | {graph.params:,} | "
                f"{graph.macs / 1e6:,.0f} | {graph.normalization} | {result.max_abs_diff:.1e} | "
                f"{result.max_rel_diff:.1e} | {'yes' if result.ok else 'NO'} |"
            )
    print(f"\n{failures} of {len(conv.BACKBONES) * len(conv.EXPORTERS)} outside tolerance")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-corpus", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    conv = export_backbones
    load_lower_table(conv, args.repeats)
    return 0 if args.no_corpus else min(corpus_table(conv), 1)


if __name__ == "__main__":
    sys.exit(main())
