"""Run a model onnxmtl exported, with onnxruntime alone: no onnxmtl, no torch.

    python examples/deploy_onnxruntime.py RUN/models/searched.onnx photo.png

What to feed the model is in the file itself (the `onnxmtl.input` metadata: input name,
shape, and how images were preprocessed in training); the tasks are in `onnxmtl.tasks`. This
script reads both, so it is what to copy into an application: load an image, resize it to the
model's input size, preprocess it as training did, run, read one output per task.
Needs numpy, onnxruntime and Pillow.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image


def metadata(session: ort.InferenceSession) -> tuple[dict, list[dict]]:
    """The input contract and the tasks the exporter wrote into the model's metadata."""
    props = session.get_modelmeta().custom_metadata_map
    return json.loads(props["onnxmtl.input"]), json.loads(props["onnxmtl.tasks"])


def prepare(path: str, contract: dict) -> np.ndarray:
    """The image at `path` as the model takes it: (1, 3, H, W) float32, preprocessed."""
    _, channels, height, width = contract["shape"]
    steps = contract["preprocessing"]
    if "mean" not in steps:
        raise SystemExit(f"the model's images were preprocessed {steps['description']}; do so")
    image = Image.open(path).convert(steps.get("channels", "RGB"))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    x = np.asarray(image, np.float32) * steps["scale"]
    x = (x - np.array(steps["mean"], np.float32)) / np.array(steps["std"], np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def describe(task: dict, output: np.ndarray) -> str:
    """One line for a task's output on one image."""
    kind, value = task["kind"], output[0]
    if kind == "classification":
        probs = np.exp(value - value.max())
        probs /= probs.sum()
        return f"class {int(probs.argmax())} (p={probs.max():.2f})"
    if kind == "multilabel":
        return f"labels {np.flatnonzero(value > 0).tolist()} (logit > 0)"
    if kind == "segmentation":
        labels = value.argmax(0)
        shares = {int(c): f"{(labels == c).mean():.0%}" for c in np.unique(labels)}
        return f"{labels.shape[0]}x{labels.shape[1]} label map, pixels per class {shares}"
    if value.ndim == 3:  # depth, normals: dense maps
        return f"{value.shape} map, mean {value.mean(axis=(1, 2)).round(3).tolist()}"
    return f"{np.round(value, 4).tolist()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an ONNX file onnxmtl exported")
    parser.add_argument("image", help="an image file (PNG, JPEG, ...)")
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    contract, tasks = metadata(session)
    outputs = session.run(None, {contract["name"]: prepare(args.image, contract)})
    names = [o.name for o in session.get_outputs()]
    by_name = {t["name"]: t for t in tasks}
    for name, output in zip(names, outputs):
        print(f"{name} ({by_name[name]['kind']}): {describe(by_name[name], output)}")


if __name__ == "__main__":
    main()
