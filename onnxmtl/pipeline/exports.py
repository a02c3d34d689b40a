"""The models `run` exports: the searched one and every baseline, each as one ONNX file that
takes the images at the size the data come in, checked against the trained model on a real
test image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from onnxmtl.compiler import SHARED, Policy, load_supermodel
from onnxmtl.compiler.supermodel import SuperModel
from onnxmtl.derived import derive, save_derived
from onnxmtl.errors import DynamicBatchError, ExportMismatchError
from onnxmtl.exporter import export
from onnxmtl.exporter.onnx_export import DEFAULT_RTOL, INPUT_KEY, INPUT_NAME, read_metadata
from onnxmtl.lower.verify import max_diffs
from onnxmtl.run_folder import PipelineFolder, RunFolder
from onnxmtl.runtime import session
from onnxmtl.training.evaluate import fit_input


def one_model_baselines(baselines: tuple[str, ...]) -> list[str]:
    """The baselines that are one model each (every one but single-task)."""
    return [b for b in baselines if b != "single-task"]


Jobs = dict[str, tuple[SuperModel, Policy, list[str] | None]]  # model name -> what to derive


def run_models(
    supermodel: SuperModel, policy: Policy, out: PipelineFolder, baselines: tuple[str, ...]
) -> Jobs:
    """Every model `run` exports: the searched one and each baseline, with its trained
    supermodel, its policy and the tasks it keeps (without a single-task baseline, the
    single-task models are cut from the searched supermodel, for their latency)."""
    jobs: Jobs = {out.SEARCHED: (supermodel, policy, None)}
    for name in one_model_baselines(baselines):
        trained = load_supermodel(out.baseline(name).supermodel)
        jobs[name] = (trained, policy_of(out.baseline(name)), None)
    for task in supermodel.task_names:
        if "single-task" in baselines:
            folder = out.baseline("single-task").task(task)
            jobs[f"single-{task}"] = (load_supermodel(folder.supermodel), policy_of(folder), None)
        else:
            jobs[f"single-{task}"] = (supermodel, supermodel.uniform_policy(SHARED), [task])
    return jobs


def export_models(
    jobs: Jobs,
    out: PipelineFolder,
    image: torch.Tensor,
    preprocessing: dict[str, Any],
    progress: bool,
) -> dict[str, Path]:
    """ONNX files of `jobs`, each taking images at the size of `image` (the data's), in
    batches of any size, or one at a time where the backbone's graph keeps the batch it was
    traced with (the input contract in each file's metadata says which)."""
    size = (int(image.shape[-2]), int(image.shape[-1]))
    files = {}
    for name, (model, chosen, keep) in jobs.items():
        path = out.onnx(name)
        if not path.exists():
            derived = derive(model, chosen, keep)
            if name == out.SEARCHED:
                save_derived(derived, model, out.derived)
            try:
                export(derived, path, image_size=size, preprocessing=preprocessing)
            except DynamicBatchError:
                export(derived, path, image_size=size, preprocessing=preprocessing, batch=1)
                if progress:
                    print(f"{path.name}: exported for one image at a time", flush=True)
        files[name] = path
    if progress:
        print(f"exported {len(files)} models to {out.models}", flush=True)
    return files


def self_check(jobs: Jobs, files: dict[str, Path], image: torch.Tensor) -> dict[str, float]:
    """Each exported file, run by onnxruntime on a test image as the data give it, against
    the trained PyTorch model it came from (the supermodel under its policy, fed as training
    fed it): the largest difference relative to the output scale, per model (stand-ins cut
    for their latency alone are not checked). An ExportMismatchError where one is over the
    export tolerance."""
    diffs = {}
    for name, (model, chosen, keep) in jobs.items():
        if keep is not None:  # a stand-in cut for its latency, not a trained model
            continue
        ort = session(str(files[name]), ["CPUExecutionProvider"])
        outputs = [o.name for o in ort.get_outputs()]
        got = ort.run(outputs, {INPUT_NAME: image.numpy()})
        was_training = model.training
        model.eval()
        with torch.no_grad():
            ref = model(fit_input(image, model), mode="fixed", policy=chosen)
        model.train(was_training)
        diffs[name] = max_diffs([ref[t].numpy() for t in outputs], got)[1]
        if diffs[name] > DEFAULT_RTOL:
            raise ExportMismatchError(
                f"{files[name]}: on the first test image, onnxruntime differs from the trained "
                f"model by {diffs[name]:.3g} of the output scale (tolerance {DEFAULT_RTOL:g}); "
                "the export does not reproduce training. Run with --debug and report it."
            )
    return diffs


def input_contract(path: Path) -> dict[str, Any]:
    """What the exported models take (`INPUT_KEY` in their metadata)."""
    return json.loads(read_metadata(path)[INPUT_KEY])


def policy_of(folder: RunFolder) -> Policy:
    """The policy a finished run folder trained."""
    return Policy.from_json(folder.policy)
