"""Export Keras applications to ONNX with tf2onnx, channels-last, as TensorFlow users bring them.

The models are built with `weights=None` (seeded, nothing is downloaded) at their declared size
and converted by `tf2onnx.convert.from_keras` without `--inputs-as-nchw`, so the files take
(N, H, W, C) images, with a dynamic batch unless the entry asks for a static batch of 1.

TensorFlow and tf2onnx are no dependencies of onnxmtl: run from any Python, this script creates
its own virtual environment once under `.cache/keras-venv` and re-runs itself inside it.

    python converters/export_keras.py all --out-dir .cache/corpus-keras
    python converters/export_keras.py mobilenet_v2 resnet50
    python converters/export_keras.py --list

ConvNeXtTiny is not listed: tf2onnx 1.17 leaves its exact GELU (`Erfc`) and depthwise
convolutions (`StatefulPartitionedCall`) as TensorFlow ops in the file, which no ONNX runtime
runs (onnxmtl.load names the first such node).

This script is a tool for users and tests; the onnxmtl library never imports it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, also by TensorFlow's own interpreter

from converters.batch import chosen_names, run_exports  # noqa: E402

VENV = ROOT / ".cache" / "keras-venv"
OUT_DIR = ROOT / ".cache" / "corpus-keras"
# Versions the exports were checked with; the marker file records a finished install.
REQUIREMENTS = ("tensorflow-cpu==2.21.*", "tf2onnx==1.17.*")
INSTALLED_MARKER = "onnxmtl-installed"


@dataclass(frozen=True)
class KerasModel:
    name: str
    application: str  # the constructor's name in keras.applications
    opset: int
    input_size: int = 224
    static_batch: bool = False  # a batch of 1 fixed in the file, as some exports have
    # Built for any size (`input_shape=(None, None, 3)`, no classifier), as fully convolutional
    # backbones are: tf2onnx then writes `padding="same"` as `auto_pad`, and the file runs at
    # every size; input_size is only the size to try first.
    any_size: bool = False


MODELS: dict[str, KerasModel] = {
    m.name: m
    for m in [
        KerasModel("mobilenet_v2", "MobileNetV2", 13),
        KerasModel("mobilenet_v2_batch1", "MobileNetV2", 17, static_batch=True),
        KerasModel("mobilenet_v2_anysize", "MobileNetV2", 16, any_size=True),
        KerasModel("mobilenet_v3_small", "MobileNetV3Small", 17),
        KerasModel("resnet50", "ResNet50", 15),
        KerasModel("efficientnet_b0", "EfficientNetB0", 17),
        KerasModel("densenet121", "DenseNet121", 13),
        KerasModel("nasnet_mobile", "NASNetMobile", 17),
    ]
}


def venv_python(venv_dir: Path = VENV) -> Path:
    """The interpreter of the converter's own environment, created (and TensorFlow and tf2onnx
    installed into it) on first use. Raises RuntimeError with pip's last words on failure."""
    python = venv_dir / "bin" / "python"
    if (venv_dir / INSTALLED_MARKER).exists():
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"pip could not install {' '.join(REQUIREMENTS)}: {' '.join(tail)}")
    (venv_dir / INSTALLED_MARKER).write_text(" ".join(REQUIREMENTS) + "\n")
    return python


def corpus_path(out_dir: Path, name: str) -> Path:
    """Where `export_model` writes `name`."""
    return out_dir / f"{name}.onnx"


def export_model(name: str, out_dir: Path, overwrite: bool = False) -> Path:
    """Build Keras application `name` (seed 0, random weights) and convert it with tf2onnx at
    its declared size (or for any size); reuse an existing file unless `overwrite`. Needs
    TensorFlow: run inside the converter's environment."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; `--list` shows the names")
    path = corpus_path(out_dir, name)
    if path.exists() and not overwrite:
        return path
    import keras
    import tensorflow as tf
    import tf2onnx

    spec = MODELS[name]
    keras.utils.set_random_seed(0)
    size = None if spec.any_size else spec.input_size
    model = getattr(keras.applications, spec.application)(
        weights=None, input_shape=(size, size, 3), include_top=not spec.any_size
    )
    batch = 1 if spec.static_batch else None
    signature = (tf.TensorSpec((batch, size, size, 3), tf.float32, name="input"),)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tf2onnx.convert.from_keras(
            model, input_signature=signature, opset=spec.opset, output_path=str(tmp)
        )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _has_tensorflow() -> bool:
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="model names, or `all`")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--overwrite", action="store_true", help="re-export existing files")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    args = parser.parse_args(argv)

    if args.list or not args.names:
        for m in MODELS.values():
            batch = "batch 1" if m.static_batch else "dynamic batch"
            size = "any size, no top" if m.any_size else f"{m.input_size}x{m.input_size}"
            print(
                f"{m.name:22s} keras.applications.{m.application} "
                f"({size}, opset {m.opset}, {batch})"
            )
        return 0
    names = chosen_names(args.names, MODELS, "model")
    if names is None:
        return 2
    todo = [n for n in names if args.overwrite or not corpus_path(args.out_dir, n).exists()]
    if todo and not _has_tensorflow():  # re-run inside the environment that has TensorFlow
        try:
            python = venv_python()
        except RuntimeError as exc:
            print(f"error: {exc}")
            return 3
        command = [str(python), str(Path(__file__).resolve()), *todo, "--out-dir"]
        command += [str(args.out_dir.resolve())] + (["--overwrite"] if args.overwrite else [])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        return subprocess.run(command, env=env).returncode
    jobs = {name: partial(export_model, name, args.out_dir, args.overwrite) for name in names}
    return run_exports(jobs)


if __name__ == "__main__":
    sys.exit(main())
