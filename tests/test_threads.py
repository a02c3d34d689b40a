"""The `threads` setting: torch's CPU threads for the length of a run, then given back."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import onnxmtl
from onnxmtl.data import Scenes
from onnxmtl.errors import ConfigError
from onnxmtl.runtime import cpu_threads
from onnxmtl.tasks.heads import HEADS
from onnxmtl.training import SearchConfig
from tests.helpers import assert_clean_error, run_cli

TINY = dict(batch_size=4, warmup_steps=1, search_steps=1, post_train_steps=1)
DATA = dict(count=12, size=32)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_cpu_threads_sets_them_inside_and_restores_them_after(two_threads):
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), cpu_threads(1):
        raise RuntimeError("a failing run")
    assert torch.get_num_threads() == 2
    with cpu_threads(0):
        assert torch.get_num_threads() == 2


def test_a_search_runs_with_its_threads_and_gives_them_back(two_threads, tiny_export, tmp_path):
    seen = []

    def probe(task, in_channels):  # built while the run compiles its supermodel
        seen.append(torch.get_num_threads())
        return HEADS["conv1x1"](task, in_channels)

    train = Scenes("train", cache_dir=tmp_path / "data", **DATA)
    tasks = [replace(t, head=probe) for t in train.tasks()[:2]]
    config = {**TINY, "threads": 1, "data": {**DATA, "cache_dir": str(tmp_path / "data")}}
    onnxmtl.search(
        tiny_export("legacy17"), "scenes", tmp_path / "run", tasks, config, progress=False
    )
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == 1


def test_threads_must_be_a_count():
    with pytest.raises(ConfigError, match="threads must be an integer >= 0"):
        SearchConfig().with_options(threads=-1)


def test_threads_on_the_command_line_reach_the_config(tiny_export, tmp_path):
    proc = run_cli(
        "search", str(tiny_export("legacy17")), "--data", "scenes", "--out", str(tmp_path / "r"),
        "--threads", "-2",
    )  # fmt: skip
    assert_clean_error(proc, "threads must be an integer >= 0")
    assert not (tmp_path / "r").exists()
