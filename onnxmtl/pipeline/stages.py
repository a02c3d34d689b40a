"""Single stages as the CLI starts them: a search, the baselines, and evaluating a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from onnxmtl.compiler import (
    POLICY_BASELINES,
    Policy,
    SuperModel,
    baseline_policy,
    compile,
    is_policy_baseline,
    load_supermodel,
    save_supermodel,
)
from onnxmtl.cost import cost_factory, make_cost
from onnxmtl.data import MultiTaskDataset, load_dataset, split_indices
from onnxmtl.data.torch_dataset import DataSource, torch_splits
from onnxmtl.errors import ConfigError
from onnxmtl.ir import load
from onnxmtl.ir.from_torch import export_module
from onnxmtl.pipeline.run_folders import (
    check_resume,
    finished,
    prepare_dir,
    record,
    run_info,
    writing,
)
from onnxmtl.run_folder import RunFolder
from onnxmtl.runtime import cpu_threads
from onnxmtl.tasks import Task, load_tasks
from onnxmtl.training import distributed
from onnxmtl.training.config import SearchConfig, as_config
from onnxmtl.training.evaluate import evaluate
from onnxmtl.training.result import SearchResult
from onnxmtl.training.trainer import Trainer

BASELINES = ("single-task", *POLICY_BASELINES)  # what `train_baseline` trains by name


def load_splits(
    data: DataSource, config: SearchConfig, tasks: str | Path | list[Task] | None
) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """The (train, test) splits of a named dataset or folder, or of a user's pair of torch
    Datasets (labelled for `tasks`; any other sequence is refused by `torch_splits`)."""
    if isinstance(data, str | Path):
        options = config.dataset.options
        return load_dataset(data, "train", **options), load_dataset(data, "test", **options)
    return torch_splits(data, load_tasks(tasks) if isinstance(tasks, str | Path) else tasks)


def test_image(
    data: DataSource, config: SearchConfig, tasks: str | Path | list[Task] | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The first image of the test split as a batch of one, at the size the data come in,
    and how the dataset preprocessed it: what a deployed model takes."""
    _, test = load_splits(data, config, tasks)
    image, _ = test[0]
    return image.unsqueeze(0), test.preprocessing


def _tasks(
    tasks: str | Path | list[Task] | None,
    dataset: MultiTaskDataset,
    test: MultiTaskDataset | None = None,
) -> list[Task]:
    """The tasks to train (the dataset's own by default), after checking that the dataset
    labels them and that its splits hold data they can train on."""
    if tasks is None:
        task_list = dataset.tasks()
    else:
        task_list = load_tasks(tasks) if isinstance(tasks, str | Path) else tasks
        labelled = {t.name for t in dataset.tasks()}
        missing = [t.name for t in task_list if t.name not in labelled]
        if missing:
            raise ConfigError(
                f"tasks {', '.join(missing)} are not labelled by dataset '{dataset.name}' (it "
                f"has {', '.join(sorted(labelled))}); rename them or leave --tasks out."
            )
    for split in (dataset, test):
        if split is not None:
            split.check(task_list)
    return task_list


def start(config: SearchConfig | dict | str | Path | None) -> SearchConfig:
    """The config, after checking that its cost is a registered one and its device is here,
    and joining torchrun's process group if there is one."""
    config = as_config(config)
    if config.cost.model is not None:
        cost_factory(config.cost.model)
    device = torch.device(config.runtime.device)
    check_device(device)
    distributed.setup(distributed.local_device(device))
    return config


def check_device(device: torch.device) -> None:
    """A ConfigError unless `device` exists on this machine."""
    if device.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            f"config: device {str(device)!r}, but this machine has no CUDA device torch can "
            "use; set device: cpu (or --device cpu)."
        )
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"config: device {str(device)!r}, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})."
        )


Backbone = str | Path | torch.nn.Module


def backbone_file(model: Backbone, out: Path, example_input: torch.Tensor | None = None) -> Path:
    """The backbone's ONNX file: `model` itself, or a PyTorch module exported (traced on
    `example_input`) into the run folder (`RunFolder.backbone`), where run.json's hash of it
    lets --resume tell whether the module changed."""
    if not isinstance(model, torch.nn.Module):
        return Path(model)
    if example_input is None:
        raise ConfigError(
            f"{type(model).__name__}: a PyTorch module as the backbone needs example_input, an "
            "(N, C, H, W) image tensor at the data's size, to export it with."
        )
    path = RunFolder(out).backbone
    if distributed.is_main():
        export_module(model, example_input, path)
    distributed.barrier()
    return path


def compile_for_run(model_path: Path, tasks: list[Task], config: SearchConfig) -> SuperModel:
    """The supermodel a run trains, compiled with the config's options (searches and
    baselines alike, so that a policy of one fits the other)."""
    return compile(
        load(model_path), tasks, seed=config.runtime.seed, skip_projection=config.search.skips
    )


def _save(model: SuperModel, path: Path) -> None:
    if distributed.is_main():
        save_supermodel(model, path)
    distributed.barrier()


def search(
    model_path: Backbone,
    data: DataSource,
    out: str | Path,
    tasks: str | Path | list[Task] | None = None,
    config: SearchConfig | dict | str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    example_input: torch.Tensor | None = None,
) -> SearchResult:
    """Compile, warm up, search, derive and post-train; the run folder gets policy.json,
    supermodel.pt, metrics.json(l), config.json, run.json and checkpoint.pt. The backbone is
    an ONNX file or a PyTorch module (exported on `example_input`)."""
    out = Path(out)
    config = start(config)
    with writing(out), cpu_threads(config.runtime.threads):
        resume = prepare_dir(out, resume, force)
        model_path = backbone_file(model_path, out, example_input)
        train, test = load_splits(data, config, tasks)
        task_list = _tasks(tasks, train, test)
        info = run_info("search", model_path, data, task_list, config)
        if resume:
            check_resume(out, info)
        model = compile_for_run(model_path, task_list, config)
        cost = make_cost(model, config, progress)
        trainer = Trainer(model, train, config, out, test=test, progress=progress, cost=cost)
        record(out, info)
        result = trainer.run(resume=resume)
        _save(model, RunFolder(out).supermodel)
    return result


def train_baseline(
    model_path: Backbone,
    data: DataSource,
    out: str | Path,
    baseline: str,
    tasks: str | Path | list[Task] | None = None,
    config: SearchConfig | dict | str | Path | None = None,
    policy: str | Path | Policy | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    example_input: torch.Tensor | None = None,
) -> dict[str, SearchResult]:
    """Train a baseline from the same trainer: 'all-shared' (hard parameter sharing),
    'single-task' (one model per task, in out/TASK), 'random' (a seeded random policy) or a
    hand-made 'own-last-K' / 'skip-last-K' (the last K units task-specific or skipped); or
    post-train a given policy (`policy`: a policy.json or a `Policy`). The backbone is an ONNX
    file or a PyTorch module (exported on `example_input`)."""
    if policy is None and baseline != "single-task" and not is_policy_baseline(baseline):
        raise ConfigError(
            f"--baseline must be one of {', '.join(BASELINES)} (or own-last-K, skip-last-K), "
            f"got {baseline!r}."
        )
    out = Path(out)
    config = start(config)
    config = config.with_options(post_train_steps=config.baseline_length)
    with writing(out), cpu_threads(config.runtime.threads):
        return _train_baseline(
            model_path,
            data,
            out,
            baseline,
            tasks,
            config,
            policy,
            resume,
            force,
            progress,
            example_input,
        )


def _train_baseline(
    model_path: Backbone,
    data: DataSource,
    out: Path,
    baseline: str,
    tasks: str | Path | list[Task] | None,
    config: SearchConfig,
    policy: str | Path | Policy | None,
    resume: bool,
    force: bool,
    progress: bool,
    example_input: torch.Tensor | None,
) -> dict[str, SearchResult]:
    resume = prepare_dir(out, resume, force)
    model_path = backbone_file(model_path, out, example_input)
    train, test = load_splits(data, config, tasks)
    task_list = _tasks(tasks, train, test)
    groups = [[t] for t in task_list] if baseline == "single-task" else [task_list]
    results = {}
    kind = baseline if policy is None else "policy"
    info = run_info(kind, model_path, data, task_list, config, policy)
    if resume:
        check_resume(out, info)
    if isinstance(policy, str | Path):
        Policy.from_json(policy)  # a file that is not a policy is refused before run.json
    record(out, info)
    for group in groups:
        folder = out / group[0].name if baseline == "single-task" else out
        done = finished(folder) if resume else None
        if done is not None:
            results[folder.name] = done
            continue
        model = compile_for_run(model_path, group, config)
        if isinstance(policy, Policy):
            model.choices_of(policy)  # one for another model is refused
            fixed = policy
        elif policy is not None:
            fixed = Policy.for_model(policy, model)  # one for another model is refused
        elif baseline == "single-task":
            fixed = baseline_policy(model, "all-shared", config.runtime.seed)
        else:
            fixed = baseline_policy(model, baseline, config.runtime.seed)
        label = f"{baseline} {group[0].name}" if baseline == "single-task" else baseline
        trainer = Trainer(
            model,
            train,
            config,
            folder,
            test=test,
            fixed_policy=fixed,
            progress=progress,
            label=label if policy is None else "policy",
        )
        resume_here = resume and RunFolder(folder).checkpoint.exists()
        results[folder.name] = trainer.run(resume=resume_here)
        _save(model, RunFolder(folder).supermodel)
    return results


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, dict[str, float]]:
    """The metrics of a finished run folder's model (its policy) on `split`."""
    run_dir = Path(run_dir)
    info_path = RunFolder(run_dir).run_file
    if not info_path.exists():
        raise ConfigError(f"{run_dir}: not a run folder (no {info_path.name}).")
    info = json.loads(info_path.read_text())
    if info["data"].startswith("python:"):
        raise ConfigError(
            f"{run_dir}: trained on Python datasets ({info['data'].removeprefix('python:')}), "
            "which a run folder cannot reload; evaluate it from Python with "
            "onnxmtl.training.evaluate."
        )
    config = SearchConfig.from_dict(info["config"], str(info_path))
    folders = RunFolder(run_dir).tasks() or [RunFolder(run_dir)]
    dataset = load_dataset(
        info["data"], "test" if split == "test" else "train", **config.dataset.options
    )
    indices = None
    if split != "test":
        indices = split_indices(
            len(dataset), config.runtime.seed, config.dataset.val_fraction, dataset.val_indices()
        )["val"]
    metrics: dict[str, dict[str, float]] = {}
    for folder in folders:
        if not folder.supermodel.exists():
            raise ConfigError(
                f"{folder.path}: no {folder.supermodel.name}; the run has not finished."
            )
        model = load_supermodel(folder.supermodel)
        policy = model.policy or Policy.from_json(folder.policy)  # saved without it: older
        metrics.update(evaluate(model, dataset, indices, config.dataset.batch_size, policy=policy))
    return metrics
