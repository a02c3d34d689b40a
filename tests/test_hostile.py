"""Hostile input on the command line: every case fails with one line on stderr and exit
code 2, writes nothing half-way, runs no code from a run folder and deletes no user file.

Each row of CASES prepares its files in a fresh folder and gives the command's arguments;
its check (if any) then looks at what is left on disk."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import onnxmtl
from onnxmtl.compiler import SHARED, load_supermodel
from onnxmtl.data import Scenes, load_dataset
from onnxmtl.data.base import normalize_image
from onnxmtl.derived import derive, save_derived
from onnxmtl.errors import DataError, RunFolderError, TrainingError
from onnxmtl.io_utils import FILE_LIST, atomic_write_text, read_file_list
from onnxmtl.pipeline.stages import search
from onnxmtl.run_folder import LOCK_FILE, clear_run, foreign_entries, locked
from onnxmtl.training import SearchConfig, Trainer
from tests.helpers import (
    TINY,
    assert_clean_error,
    image,
    make_folder,
    make_model,
    output,
    rand,
    run_cli,
    tiny_model,
)

CONFIG = """batch_size: 4
warmup_steps: 1
search_steps: 1
post_train_steps: 1
baseline_steps: 1
batchnorm_batches: 1
eval_batches: 1
data: {count: 16, size: 32, cache_dir: CACHE}
"""


@dataclass
class Env:
    """Files the cases share (built once per module) and the case's own folder."""

    model: Path  # a tiny backbone (ONNX)
    config: Path  # a tiny search config
    run: Path  # a finished tiny search run folder
    tmp: Path  # this case's folder
    held: int | None = None  # a file descriptor holding the run folder's lock

    def copy_run(self) -> Path:
        """A copy of the finished run in the case's folder."""
        return Path(shutil.copytree(self.run, self.tmp / "run"))

    def search(self, out: Path, *extra: str) -> list[str]:
        """Arguments of a tiny `search` into `out`."""
        return [
            "search",
            str(self.model),
            "--data",
            "scenes",
            "--config",
            str(self.config),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]


@pytest.fixture(scope="module")
def shared(tiny_export, tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("hostile")
    config = root / "config.yaml"
    config.write_text(CONFIG.replace("CACHE", str(root / "cache")))
    model = tiny_export("legacy17", fold_bn=True)
    search(model, "scenes", root / "run", config=config, progress=False)
    return model, config, root / "run"


class _Marker:
    """Unpickling this creates the file MARKER_PATH: how a malicious checkpoint runs code."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious_checkpoint(env: Env) -> list[str]:
    run = env.copy_run()
    marker = _Marker()
    marker.path = str(env.tmp / "MARKER")
    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"phase": marker}, f)
    return env.search(run, "--resume")


def _no_marker(env: Env) -> None:
    assert not (env.tmp / "MARKER").exists(), "the checkpoint ran code"


def _pipeline_resumes_a_malicious_checkpoint(env: Env) -> list[str]:
    folder = env.tmp / "pipeline"
    folder.mkdir()
    run = env.copy_run()
    (run / "metrics.json").unlink()  # unfinished: `run` resumes it from its checkpoint
    shutil.move(run, folder / "search")
    marker = _Marker()
    marker.path = str(env.tmp / "MARKER")
    with open(folder / "search" / "checkpoint.pt", "wb") as f:
        pickle.dump({"phase": marker}, f)
    from onnxmtl.pipeline.run_folders import run_info  # the pipeline's record, as `run` writes it

    info = run_info("pipeline", env.model, "scenes", None, SearchConfig.load(env.config))
    (folder / "run.json").write_text(json.dumps(info))
    args = env.search(folder)
    args[0] = "run"
    return args


def _truncated_checkpoint(env: Env) -> list[str]:
    run = env.copy_run()
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return env.search(run, "--resume")


def _foreign_checkpoint(env: Env) -> list[str]:
    run = env.copy_run()
    shutil.copy(run / "supermodel.pt", run / "checkpoint.pt")
    return env.search(run, "--resume")


def _resume_with_another_config(env: Env) -> list[str]:
    run = env.copy_run()
    other = env.tmp / "other.yaml"
    text = env.config.read_text().replace("batch_size: 4", "batch_size: 2")
    other.write_text(text + "seed: 1\n")
    args = env.search(run, "--resume")
    args[args.index("--config") + 1] = str(other)
    return args


def _user_file_in_run(env: Env) -> list[str]:
    run = env.copy_run()
    (run / "model.onnx").write_bytes(b"the user's model")
    return env.search(run, "--force")


def _user_folder(env: Env) -> list[str]:
    folder = env.tmp / "run"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"the user's model")
    return env.search(folder, "--force")


def _pipeline_into_the_model_folder(env: Env) -> list[str]:
    folder = env.tmp / "run"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(env.model.read_bytes())
    return ["run", str(folder / "model.onnx"), "--data", "scenes", "--out", str(folder)]


def _user_file_kept(env: Env) -> None:
    assert (env.tmp / "run" / "model.onnx").is_file(), "the user's file was deleted"
    assert sorted(p.name for p in (env.tmp / "run").iterdir()) != [".onnxmtl.lock"]


def _locked_by_another_process(env: Env) -> list[str]:
    run = env.copy_run()
    env.held = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(env.held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return env.search(run, "--resume")


def _cuda_without_gpu(env: Env) -> list[str]:
    return [*env.search(env.tmp / "new"), "--device", "cuda"]


def _nothing_left(env: Env) -> None:
    assert not (env.tmp / "new").exists(), "a failed start left files behind"


def _nan_learning_rate(env: Env) -> list[str]:
    config = env.tmp / "nan.yaml"
    config.write_text(env.config.read_text() + "weight_lr: .nan\n")
    args = env.search(env.tmp / "new")
    args[args.index("--config") + 1] = str(config)
    return args


def _nan_onnx_model(env: Env) -> list[str]:
    weight = rand(4, 3, 3, 3)
    weight[0, 0, 0, 0] = np.nan
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"])], [image()], [out], {"w": weight}
    )
    onnx.save(model, env.tmp / "nan.onnx")
    return ["verify", str(env.tmp / "nan.onnx")]


def _nan_derived_model(env: Env) -> list[str]:
    supermodel = load_supermodel(env.run / "supermodel.pt")
    model = derive(supermodel, supermodel.uniform_policy(SHARED))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_derived(model, supermodel, env.tmp / "nan.pt")
    return ["export", str(env.tmp / "nan.pt"), "-o", str(env.tmp / "nan.onnx")]


def _no_onnx_written(env: Env) -> None:
    assert not (env.tmp / "nan.onnx").exists()


def _task_named_image(env: Env) -> list[str]:
    tasks = env.tmp / "tasks.yaml"
    tasks.write_text("tasks: [{name: image, kind: depth}]\n")
    return ["compile", str(env.model), "--tasks", str(tasks), "-o", str(env.tmp / "s.pt")]


def _absurd_num_outputs(env: Env) -> list[str]:
    tasks = env.tmp / "tasks.yaml"
    tasks.write_text("tasks: [{name: c, kind: classification, num_outputs: 100000000000}]\n")
    return ["compile", str(env.model), "--tasks", str(tasks), "-o", str(env.tmp / "s.pt")]


def _absurd_thread_count(env: Env) -> list[str]:
    return ["bench", str(env.model), "--threads", "100000"]  # OpenMP would abort the process


# A YAML alias bomb: six levels of nine references, 9^6 strings once expanded.
_LEVELS = ["&a [" + ", ".join(['"lol"'] * 9) + "]"] + [
    f"&{b} [" + ", ".join([f"*{a}"] * 9) + "]" for a, b in zip("abcde", "bcdef")
]
BOMB = "[" + ", ".join(_LEVELS) + "]"


def _alias_bomb_in_an_option(env: Env) -> list[str]:
    config = env.tmp / "bomb.yaml"
    config.write_text(f"{env.config.read_text()}latency_cache: {BOMB}\n")
    return [*env.search(env.tmp / "out")[:5], str(config), "--out", str(env.tmp / "out")]


def _alias_bomb_in_a_head(env: Env) -> list[str]:
    tasks = env.tmp / "tasks.yaml"
    tasks.write_text(f"tasks: [{{name: a, kind: depth, head: {BOMB}}}]\n")
    return ["compile", str(env.model), "--tasks", str(tasks), "-o", str(env.tmp / "s.pt")]


def _overlong_string_option(env: Env) -> list[str]:
    config = env.tmp / "long.yaml"
    config.write_text(f"{env.config.read_text()}latency_cache: {'x' * 100_000}\n")
    return [*env.search(env.tmp / "out")[:5], str(config), "--out", str(env.tmp / "out")]


def _short_and_nothing_written(env: Env) -> None:
    assert not (env.tmp / "out").exists() and not (env.tmp / "s.pt").exists()


def _derived(env: Env) -> Path:
    supermodel = load_supermodel(env.run / "supermodel.pt")
    path = env.tmp / "derived.pt"
    save_derived(derive(supermodel, supermodel.uniform_policy(SHARED)), supermodel, path)
    return path


def _export(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["export", str(_derived(env)), "-o", str(env.tmp / "m.onnx"), *extra]


def _no_model_written(env: Env) -> None:
    assert not (env.tmp / "m.onnx").exists()


def _compile_to(output: Callable[[Env], Path]) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        tasks = env.tmp / "tasks.yaml"
        tasks.write_text("tasks: [{name: d, kind: depth}]\n")
        return ["compile", str(env.model), "--tasks", str(tasks), "-o", str(output(env))]

    return setup


def _existing_folder(env: Env) -> Path:
    (env.tmp / "out").mkdir()
    return env.tmp / "out"


def _under_a_file(env: Env) -> Path:
    (env.tmp / "file").write_text("")
    return env.tmp / "file" / "s.pt"


def _binary(env: Env, name: str) -> Path:
    path = env.tmp / name
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _binary_tasks(env: Env) -> list[str]:
    tasks = _binary(env, "tasks.yaml")
    return ["compile", str(env.model), "--tasks", str(tasks), "-o", str(env.tmp / "s.pt")]


def _binary_policy(env: Env) -> list[str]:
    policy = _binary(env, "policy.json")
    return ["derive", str(env.run), "--policy", str(policy), "-o", str(env.tmp / "d.pt")]


def _deeply_nested_policy(env: Env) -> list[str]:
    policy = env.tmp / "policy.json"
    policy.write_text("[" * 100_000 + "]" * 100_000)  # deeper than the JSON parser recurses
    return ["derive", str(env.run), "--policy", str(policy), "-o", str(env.tmp / "d.pt")]


def _damaged_results(env: Env) -> list[str]:
    run = env.tmp / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "pipeline"}))
    (run / "results.json").write_text("{ half a results file")
    return ["quantize", str(run)]


def _policy_of_other_units(env: Env) -> list[str]:
    policy = json.loads((env.run / "policy.json").read_text())
    policy["units"] = list(reversed(policy["units"]))
    (env.tmp / "policy.json").write_text(json.dumps(policy))
    return ["derive", str(env.run), "--policy", str(env.tmp / "policy.json")] + [
        "-o",
        str(env.tmp / "d.pt"),
    ]


def _external_data_outside(env: Env) -> list[str]:
    folder = env.tmp / "model"
    folder.mkdir()
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    model = make_model([conv], [image()], [out], {"w": rand(4, 3, 3, 3)})
    onnx.save(
        model, folder / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../w.bin"
    onnx.save(proto, folder / "m.onnx")
    shutil.move(folder / "w.bin", env.tmp / "w.bin")
    return ["verify", str(folder / "m.onnx")]


def _dense_task_on_a_vector(env: Env) -> list[str]:
    tasks = env.tmp / "tasks.yaml"
    tasks.write_text("tasks: [{name: d, kind: depth}]\n")
    output = onnx.load(env.model).graph.output[0].name
    args = ["compile", str(env.model), "--tasks", str(tasks), "--features", output]
    return [*args, "-o", str(env.tmp / "s.pt")]


def _if_reading_an_outer_value(env: Env) -> list[str]:
    """A constant-condition If whose branches read an initializer of the outer graph: the
    constant folder must leave it to the converters rather than evaluate it alone."""
    branch = {
        name: helper.make_graph(
            [helper.make_node(op, ["outer"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1])],
        )
        for name, op in (("then", "Identity"), ("else", "Neg"))
    }
    nodes = [
        helper.make_node(
            "If", ["cond"], ["scale"], then_branch=branch["then"], else_branch=branch["else"]
        ),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "scale"], ["y"]),
    ]
    initializers = {"w": rand(4, 3, 3, 3), "outer": np.ones(1, np.float32), "cond": np.array(True)}
    path = env.tmp / "if.onnx"
    onnx.save(make_model(nodes, [image()], [output()], initializers), path)
    return ["verify", str(path)]


def _absurd_input_size(env: Env) -> list[str]:
    return ["verify", str(env.model), "--input-shape", "1,3,300000,300000"]


def _nothing_but_inputs(env: Env) -> None:
    assert not (env.tmp / "s.pt").exists() and not (env.tmp / "d.pt").exists()


@dataclass
class Case:
    id: str
    setup: Callable[[Env], list[str]]  # prepares files, returns the CLI arguments
    fragments: tuple[str, ...]  # what the one line of stderr must say
    check: Callable[[Env], None] | None = None  # what must (not) be on disk afterwards


CASES = [
    Case(
        "malicious-checkpoint",
        _malicious_checkpoint,
        ("checkpoint.pt", "could run code"),
        _no_marker,
    ),
    Case(
        "run-resumes-malicious-checkpoint",
        _pipeline_resumes_a_malicious_checkpoint,
        ("checkpoint.pt", "could run code"),
        _no_marker,
    ),
    Case("truncated-checkpoint", _truncated_checkpoint, ("checkpoint.pt", "truncated")),
    Case("foreign-checkpoint", _foreign_checkpoint, ("checkpoint.pt", "does not fit")),
    Case(
        "resume-other-config",
        _resume_with_another_config,
        ("other settings", "batch_size 4 -> 2", "seed 0 -> 1"),
    ),
    Case("force-user-file", _user_file_in_run, ("model.onnx", "--force"), _user_file_kept),
    Case("force-not-a-run", _user_folder, ("not a run folder", "--force"), _user_file_kept),
    Case(
        "force-pipeline-model-folder",
        lambda env: [*_pipeline_into_the_model_folder(env), "--force"],
        ("model.onnx", "--force"),
        _user_file_kept,
    ),
    Case("locked", _locked_by_another_process, ("another onnxmtl process",)),
    Case("cuda-without-gpu", _cuda_without_gpu, ("cuda", "device: cpu"), _nothing_left),
    Case("output-is-a-folder", _compile_to(_existing_folder), ("out", "is a folder")),
    Case("output-under-a-file", _compile_to(_under_a_file), ("s.pt", "cannot write there")),
    Case("binary-yaml", _binary_tasks, ("tasks.yaml", "not a text file"), _nothing_but_inputs),
    Case("binary-policy", _binary_policy, ("policy.json", "cannot read"), _nothing_but_inputs),
    Case(
        "deeply-nested-policy",
        _deeply_nested_policy,
        ("policy.json", "nested too deep"),
        _nothing_but_inputs,
    ),
    Case(
        "damaged-results", _damaged_results, ("results.json", "cannot read it as JSON", "--force")
    ),
    Case(
        "policy-other-units",
        _policy_of_other_units,
        ("policy.json", "other units"),
        _nothing_but_inputs,
    ),
    Case("external-data-outside", _external_data_outside, ("m.onnx", "external data")),
    Case(
        "dense-task-on-a-vector",
        _dense_task_on_a_vector,
        ("not an (N, C, H, W) map", "--features"),
        _nothing_but_inputs,
    ),
    *(
        Case(
            f"export-opset-{opset}",
            _export("--opset", opset),
            ("opset", "13 to 20"),
            _no_model_written,
        )
        for opset in ("5", "99")
    ),
    *(
        Case(
            f"export-batch{batch}", _export("--batch", batch), ("batch", ">= 1"), _no_model_written
        )
        for batch in ("0", "-3")
    ),
    Case("if-reads-outer-scope", _if_reading_an_outer_value, ("if.onnx", "If-17", "converter")),
    Case("absurd-input-size", _absurd_input_size, ("out of memory", "smaller")),
    Case(
        "absurd-num-outputs",  # torch's allocator fails with a RuntimeError, not MemoryError
        _absurd_num_outputs,
        ("out of memory", "tried to allocate", "num_outputs"),
        _nothing_but_inputs,
    ),
    Case("absurd-thread-count", _absurd_thread_count, ("threads=100000", "at most")),
    Case("task-named-image", _task_named_image, ("tasks.yaml", "'image'", "input name")),
    Case(
        "alias-bomb-in-an-option",
        _alias_bomb_in_an_option,
        ("bomb.yaml", "latency_cache=[['lol', 'lol', 'lol', 'lol', ...]", "expected a string"),
        _short_and_nothing_written,
    ),
    Case(
        "alias-bomb-in-a-head",
        _alias_bomb_in_a_head,
        ("tasks.yaml", "task 'a': head=[[", "neither a head name"),
        _short_and_nothing_written,
    ),
    Case(
        "overlong-string-option",
        _overlong_string_option,
        ("long.yaml", "latency_cache is 100,000 characters long; at most 4096"),
        _short_and_nothing_written,
    ),
    Case("nan-learning-rate", _nan_learning_rate, ("weight_lr=nan",), _nothing_left),
    Case("verify-nan-output", _nan_onnx_model, ("nan.onnx", "NaN/inf")),
    Case("export-nan-weights", _nan_derived_model, ("nan.onnx", "NaN/inf"), _no_onnx_written),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_fails_in_one_line(case: Case, shared, tmp_path) -> None:
    if case.id == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = Env(*shared, tmp_path)
    args = case.setup(env)
    try:
        assert_clean_error(run_cli(*args), *case.fragments)
    finally:
        if env.held is not None:
            os.close(env.held)
    if case.check is not None:
        case.check(env)


def test_force_clears_every_file_a_run_writes_and_nothing_else(shared, tmp_path):
    run = Env(*shared, tmp_path).copy_run()
    (run / ".metrics.json.abc123.tmp").write_text("{")  # an interrupted atomic write
    assert foreign_entries(run) == []
    clear_run(run)
    assert [p.name for p in run.iterdir()] == [LOCK_FILE]  # kept: a process may hold it
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a run folder"):
        clear_run(run)
    assert (run / "notes.txt").read_text() == "mine"


def test_the_lock_removes_stray_temporary_files_and_is_released(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / FILE_LIST).write_text("checkpoint.pt\n")  # an earlier start listed it
    stray = run / ".checkpoint.pt.k2j3h4.tmp"
    stray.write_bytes(b"half a checkpoint")
    users = run / ".draft.tmp"
    users.write_text("not onnxmtl's")
    with locked(run):
        assert not stray.exists() and users.exists()
        with pytest.raises(RunFolderError, match="another onnxmtl process"), locked(run):
            pass
    with locked(run):  # released on exit
        pass
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyError), locked(fresh):
        raise KeyError("a failed start")
    assert not fresh.exists()


class _NanImages(torch.utils.data.Dataset):
    """A dataset's samples with NaN images: what a corrupt file gives the trainer."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, targets = self.dataset[index]
        return image * float("nan"), targets


def _trainer(tiny_export, tmp_path, **options) -> Trainer:
    train = Scenes("train", count=16, size=32, cache_dir=tmp_path / "cache")
    model = onnxmtl.compile(onnxmtl.load(tiny_export("legacy17", fold_bn=True)), train.tasks())
    sizes = dict(warmup_steps=4, search_steps=2, post_train_steps=2, checkpoint_every=2)
    config = SearchConfig().with_options(batch_size=4, batchnorm_batches=1, **{**sizes, **options})
    return Trainer(model, train, config, tmp_path / "run", progress=False)


def test_the_first_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    tiny_export, tmp_path
):
    assert _trainer(tiny_export, tmp_path).run(stop_after=2) is None
    checkpoint = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    trainer = _trainer(tiny_export, tmp_path)
    run = trainer.session
    run.train_set = _NanImages(run.train_set)
    run.streams = {n: run.stream(n, n) for n in run.streams}
    with pytest.raises(TrainingError, match=r"warm-up step 3: the loss of task 'seg'.*warmup_lr"):
        trainer.run(resume=True)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == checkpoint
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2, "no log row for the step that diverged"


def test_policy_logits_that_are_not_finite_give_no_policy(tiny_export, tmp_path, monkeypatch):
    original = Trainer._run_step

    def diverges(self):
        record = original(self)
        if self.phase.name == "search":
            with torch.no_grad():
                self.model.policy_logits.fill_(float("nan"))
        return record

    monkeypatch.setattr(Trainer, "_run_step", diverges)
    with pytest.raises(TrainingError, match="policy_logits holds NaN/inf"):
        _trainer(tiny_export, tmp_path, search_steps=1, checkpoint_every=0).run()
    assert not (tmp_path / "run" / "policy.json").exists()


def _corrupt(root: Path, what: str) -> None:
    train = root / "train"
    if what == "label":
        label = np.load(train / "label" / "1.npy")
        label[0, 0] = 20
        np.save(train / "label" / "1.npy", label)
    elif what == "depth":
        depth = np.load(train / "depth" / "2.npy")
        depth[1, 1] = np.nan
        np.save(train / "depth" / "2.npy", depth)
    elif what == "normals":
        for path in (train / "normal").glob("*.npy"):
            np.save(path, np.zeros_like(np.load(path)))
    elif what == "image-nan":
        image = np.load(train / "image" / "0.npy")
        image[0, 0, 0] = np.nan
        np.save(train / "image" / "0.npy", image)
    elif what == "image-255":
        np.save(train / "image" / "1.npy", np.load(train / "image" / "1.npy") * 255)
    elif what == "image-size":
        np.save(train / "image" / "2.npy", np.zeros((5, 8, 3), np.float32))


@pytest.mark.parametrize(
    ("what", "fragments"),
    [
        ("label", ["label/1.npy", "[20]", "outside [0, 13)"]),
        ("depth", ["depth/2.npy", "NaN"]),
        ("normals", ["'normal'", "no non-zero normal"]),
        ("image-nan", ["image/0.npy", "NaN"]),
        ("image-255", ["image/1.npy", "must be in [0, 1]", "uint8"]),
        ("image-size", ["image/2.npy", "same size"]),
    ],
)
def test_bad_data_is_refused_before_training_naming_the_sample(tmp_path, what, fragments):
    make_folder(tmp_path, "train", 3, nyu=True)
    _corrupt(tmp_path, what)
    dataset = load_dataset(tmp_path, "train")
    with pytest.raises(DataError) as info:
        dataset.check(dataset.tasks())
    for fragment in fragments:
        assert fragment in str(info.value)


def test_uint8_images_are_divided_by_255(tmp_path):
    make_folder(tmp_path, "train", 3, nyu=True)
    path = tmp_path / "train" / "image" / "0.npy"
    floats = np.load(path)
    as_bytes = np.round(floats * 255).astype(np.uint8)
    np.save(path, as_bytes)
    dataset = load_dataset(tmp_path, "train")
    dataset.check(dataset.tasks())
    expected = normalize_image(as_bytes.astype(np.float32) / 255)
    assert torch.allclose(dataset[0][0], expected)


def test_a_run_on_bad_data_fails_in_one_line_before_writing(shared, tmp_path):
    make_folder(tmp_path / "data", "train", 6, nyu=True)
    make_folder(tmp_path / "data", "val", 2, nyu=True)
    _corrupt(tmp_path / "data", "label")
    env = Env(*shared, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(re.sub(r"data: .*\n", "", env.config.read_text()))
    args = env.search(tmp_path / "new")
    args[args.index("--data") + 1] = str(tmp_path / "data")
    args[args.index("--config") + 1] = str(config)
    assert_clean_error(run_cli(*args), "label/1.npy", "[20]")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(shared, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        args = _compile_to(lambda env: folder / "s.pt")(Env(*shared, tmp_path))
        assert_clean_error(run_cli(*args), "s.pt", "cannot write there")
    finally:
        folder.chmod(0o755)


def test_atomic_writes_get_the_umask_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


def _file_size_limit() -> None:
    """In the child: the OS refuses any write past 16 KB (EFBIG), as a full disk refuses
    every write (ENOSPC); SIGXFSZ ignored so the write fails instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))


def test_a_write_the_disk_refuses_is_one_line_and_leaves_nothing(shared, tmp_path):
    env = Env(*shared, tmp_path)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks: [{name: d, kind: depth}]\n")
    out = tmp_path / "out" / "s.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "onnxmtl.cli", "compile", str(env.model), "--tasks", str(tasks)]
        + ["-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit,
    )
    assert_clean_error(proc, "s.pt", "cannot write")
    assert list(out.parent.iterdir()) == []  # no half-written file, no temporary


_LOG_UNTIL_FULL = """
import sys
from pathlib import Path
from onnxmtl.errors import OutputError
from onnxmtl.run_folder import RunFolder
from onnxmtl.tasks import Task
from onnxmtl.training.log import MetricsLog
log = MetricsLog(RunFolder(Path(sys.argv[1])), sys.argv[2], [Task("d", "depth")], main=True)
try:
    for step in range(1, 100000):
        log.write("post", step, {"loss": 0.5, "loss_d": 0.25, "lr": 0.001})
except OutputError as exc:
    print(exc)
"""


@pytest.mark.parametrize("log_format", ["jsonl", "csv"])
def test_a_log_append_the_disk_refuses_is_one_line_and_no_half_row(tmp_path, log_format):
    """metrics.jsonl (or .csv) on a full disk: an OutputError naming the log and saying to
    resume, and the file ends with its last whole row."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOG_UNTIL_FULL, str(tmp_path), log_format],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"metrics.{log_format}: cannot write" in proc.stdout and "--resume" in proc.stdout
    text = (tmp_path / f"metrics.{log_format}").read_text()
    assert 0 < len(text) <= 16 * 1024 and text.endswith("\n")
    rows = text.splitlines()
    if log_format == "jsonl":
        assert [json.loads(r)["step"] for r in rows] == list(range(1, len(rows) + 1))
    else:
        assert rows[0].startswith("phase,step,") and all(
            r.count(",") == rows[0].count(",") for r in rows
        )


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_a_supermodel_whose_onnx_points_to_outside_data_is_refused(tiny_export, tmp_path, where):
    """A crafted supermodel.pt (safe for weights_only) whose embedded ONNX keeps external-data
    locations must not map another file into the backbone's weights."""
    from onnxmtl.compiler import compile, save_supermodel
    from onnxmtl.tasks import Task

    marker = tmp_path / "secret.bin"
    marker.write_bytes(np.arange(4096, dtype=np.float32).tobytes())
    path = tmp_path / "supermodel.pt"
    save_supermodel(compile(onnxmtl.load(tiny_export("legacy17")), [Task("d", "depth")]), path)
    state = torch.load(path, weights_only=True)
    proto = onnx.load_from_string(state["onnx"])
    weight = proto.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = TensorProto.EXTERNAL
    location = str(marker) if where == "absolute" else "../" * 8 + str(marker).lstrip("/")
    for key, value in (("location", location), ("offset", "0")):
        weight.external_data.add(key=key, value=value)
    state["onnx"] = proto.SerializeToString()
    torch.save(state, path)
    with pytest.raises(onnxmtl.errors.ModelFileError, match="points to data in a file"):
        load_supermodel(path)
    assert_clean_error(run_cli("inspect", str(path)), "points to data in a file")


def test_force_deletes_what_the_file_list_names_and_nothing_else(tmp_path):
    """--force judges by the run's file list, not by names: a user's file called like a run
    file (metrics.csv, backbone.onnx) or a folder of them is refused and kept, as is a list
    entry that would leave the folder; what onnxmtl wrote, in subfolders too, goes."""
    run = tmp_path / "run"
    with locked(run):
        atomic_write_text(run / "run.json", json.dumps({"kind": "search"}))
        atomic_write_text(run / "config.json", "{}")
        atomic_write_text(run / "seg" / "metrics.json", "{}")
        with locked(run / "stage"):  # a pipeline's stage: its own lock and list
            atomic_write_text(run / "stage" / "policy.json", "{}")
    assert sorted(read_file_list(run)) == [
        "config.json", "run.json", "seg/metrics.json", f"stage/{FILE_LIST}"
    ]  # fmt: skip
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    with open(run / FILE_LIST, "a") as f:  # a crafted list
        f.write(f"../outside.txt\n{outside}\n")
    for name in ("metrics.csv", "backbone.onnx"):
        (run / name).write_text("the user's")
        with pytest.raises(RunFolderError, match=rf"did not write \({name}\)"):
            clear_run(run)
        assert (run / name).read_text() == "the user's" and (run / "config.json").exists()
        (run / name).unlink()
    mine = run / "my_experiment"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="my_experiment"):
        clear_run(run)
    shutil.rmtree(mine)
    clear_run(run)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("command", ["search", "run"])
def test_a_fresh_run_into_a_users_folder_is_refused_and_touches_nothing(shared, tmp_path, command):
    env = Env(*shared, tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    files = {"metrics.csv": "a,b\n1,2\n", "config.json": '{"mine": 1}', "report.md": "# notes"}
    for name, text in files.items():
        (out / name).write_text(text)
    args = [command, str(env.model), "--data", "scenes", "--config", str(env.config)]
    assert_clean_error(run_cli(*args, "--out", str(out)), "not an onnxmtl run", "empty or new")
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != LOCK_FILE} == files


def test_a_foreign_initial_checkpoint_on_resume_is_refused_naming_it(tiny_export, scenes, tmp_path):
    """A run stopped in its search resumes; at the search's end it reloads initial.pt (for
    post_train_init 'backbone'): one holding another model's weights is a RunFolderError
    naming the file, not load_state_dict's traceback."""
    train, _ = scenes
    config = SearchConfig().with_options(**TINY, threads=1)
    first = tiny_model(tiny_export, train.tasks())
    Trainer(first, train, config, tmp_path, progress=False).run(stop_after=5)
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "initial.pt")
    resumed = tiny_model(tiny_export, train.tasks())
    with pytest.raises(RunFolderError, match=r"initial\.pt: does not fit this run.*--force"):
        Trainer(resumed, train, config, tmp_path, progress=False).run(resume=True)


def test_initial_weights_of_another_shape_are_refused_naming_the_file(tmp_path):
    """initial.pt is read before the selection's candidates start from it: a weight of the
    wrong shape is refused naming the file and the weight; one that fits comes back, with
    the weights asked to be kept in place of the file's."""
    from onnxmtl.training.checkpoint import initial_weights

    model = torch.nn.Linear(2, 3)
    path = tmp_path / "initial.pt"
    torch.save({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, path)
    wrong = r"initial\.pt: does not fit this run \(ValueError: weight is not a tensor of \[3, 2\]"
    with pytest.raises(RunFolderError, match=wrong):
        initial_weights(path, model, {})
    torch.save(model.state_dict(), path)
    state = initial_weights(path, model, {"bias": torch.ones(3)})
    assert torch.equal(state["weight"], model.weight) and torch.equal(state["bias"], torch.ones(3))
