"""A PyTorch module as an ONNX backbone: exported the way the README advises, so that it can
be ingested like any file and trained (BatchNormalization kept, batch axis dynamic)."""

from __future__ import annotations

import io
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

from onnxmtl.errors import ModelFileError, OutputError, first_line
from onnxmtl.io_utils import atomic_write

OPSET = 17


def export_module(module: torch.nn.Module, example_input: torch.Tensor, path: Path) -> Path:
    """Export `module` (in eval mode, BatchNormalization kept as its own nodes, a dynamic batch
    axis) traced on `example_input` (N, C, H, W) to `path`, atomically. An export that fails is
    one line naming the module and, where the exporter says which, the op it cannot export."""
    name = type(module).__name__
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else None
        raise ModelFileError(
            f"{name}: example_input must be an (N, C, H, W) image tensor, got "
            f"{shape if shape is not None else type(example_input).__name__}."
        )
    was_training = module.training
    module.eval()

    def write(tmp: Path) -> None:
        chatter = io.StringIO()  # the exporter prints its graph on failure; the error says it
        with warnings.catch_warnings(), redirect_stdout(chatter), redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example_input,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                training=torch.onnx.TrainingMode.PRESERVE,
                do_constant_folding=False,
                input_names=["input"],
                dynamic_axes={"input": {0: "batch"}},
            )

    try:
        atomic_write(Path(path), write)
    except (ModelFileError, OutputError):
        raise
    except Exception as exc:  # the exporter raises many kinds; each becomes one line
        op = re.search(r"(aten|prim|onnx)::\w+", str(exc))
        what = f"it cannot export {op.group(0)}" if op else first_line(exc)
        raise ModelFileError(
            f"{name}: the PyTorch ONNX exporter failed ({what}); replace that operation in the "
            "module, or export it yourself and pass the .onnx file."
        ) from exc
    finally:
        module.train(was_training)
    return Path(path)
