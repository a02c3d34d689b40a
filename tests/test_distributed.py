"""`onnxmtl search` under torchrun (2 CPU processes, gloo) against one process with the same
global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from onnxmtl.compiler import load_supermodel
from tests.conftest import converters

# Per-process gradients are averaged, so the two runs differ only by float summation order
# through ~20 steps: weights within 1e-4 of each tensor's scale; policy logits (Adam, lr
# 0.01, which turns tiny gradient differences into step-sized ones) within 1e-4 absolute,
# 1% of one policy step.
TOLERANCE = 1e-4
LOGITS_ATOL = 1e-4

CONFIG = """batch_size: 4
warmup_steps: 3
search_steps: 4
post_train_steps: 3
checkpoint_every: 2
data: {count: 24, size: 32}
"""

# A task whose loss is a plain mean over every pixel, so the mean of the per-process losses
# is the global one (masked losses such as depth's average over each process's valid pixels,
# which differs slightly from the global average, as in any data-parallel run).
TASKS = """tasks:
  - {name: seg, kind: segmentation, num_outputs: 4, head: conv1x1}
"""


class PerSampleNorm(nn.Module):
    """Convolutions with instance normalisation: every statistic is per sample, so splitting a
    batch between processes changes no value (batch statistics would). No conv bias: in
    front of a normalisation its gradient is zero up to rounding, which Adam would amplify."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(3, 3, 3, 1, 1, bias=False),
                    nn.InstanceNorm2d(3, affine=True),
                    nn.ReLU(),
                )
                for _ in range(3)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _search(
    tmp_path, out: str, processes: int, *extra: str, stop_at: int | None = None
) -> subprocess.CompletedProcess:
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        if processes > 1
        else []
    )
    program = ["-m", "onnxmtl.cli"]
    if stop_at is not None:
        program = [str(Path(__file__).parent / "interrupted_cli.py"), str(stop_at)]
    env = {**os.environ, "ONNXMTL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = [
        "search",
        str(tmp_path / "backbone.onnx"),
        "--data",
        "scenes",
        "--tasks",
        str(tmp_path / "tasks.yaml"),
        "--config",
        str(tmp_path / "config.yaml"),
        "--out",
        str(tmp_path / out),
        "--no-progress",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, *launcher, *program, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[1])},
        cwd=tmp_path,
    )


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    converters.export(PerSampleNorm().eval(), tmp_path / "backbone.onnx", "legacy17", 32, False)
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "tasks.yaml").write_text(TASKS)
    return tmp_path


def test_two_gloo_processes_match_one_process(setup):
    one = _search(setup, "one", 1)
    assert one.returncode == 0, one.stderr
    two = _search(setup, "two", 2)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("policy:") == 1  # only rank 0 prints
    a = load_supermodel(setup / "one" / "supermodel.pt")
    b = load_supermodel(setup / "two" / "supermodel.pt")
    for name, tensor in a.state_dict().items():
        if tensor.is_floating_point():
            other = b.state_dict()[name]
            scale = max(float(tensor.abs().max()), 1e-6)
            bound = LOGITS_ATOL if name == "policy_logits" else TOLERANCE * scale
            assert float((tensor - other).abs().max()) <= bound, name
    logs = [
        [json.loads(line) for line in (setup / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    ]
    assert len(logs[0]) == len(logs[1]) == 10
    for x, y in zip(*logs):
        assert x["loss"] == pytest.approx(y["loss"], rel=TOLERANCE)
    assert (
        json.loads((setup / "one" / "policy.json").read_text())["choices"]
        == json.loads((setup / "two" / "policy.json").read_text())["choices"]
    )


def test_a_killed_torchrun_search_resumes_where_it_stopped(setup):
    """Both processes are interrupted at their 7th step (the 4th of the search; the last
    checkpoint holds 2 search steps); `--resume` under torchrun loads rank 0's checkpoint in
    every process and ends exactly where an uninterrupted 2-process run does."""
    whole = _search(setup, "whole", 2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _search(setup, "killed", 2, stop_at=7)
    assert killed.returncode != 0 and "add --resume to the same command" in killed.stderr
    state = torch.load(setup / "killed" / "checkpoint.pt", weights_only=False)
    assert (state["phase"], state["step"]) == ("search", 2)
    resumed = _search(setup, "killed", 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_supermodel(setup / "whole" / "supermodel.pt").state_dict()
    b = load_supermodel(setup / "killed" / "supermodel.pt").state_dict()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    rows = [(setup / r / "metrics.jsonl").read_text().splitlines() for r in ("whole", "killed")]
    strip = [[{k: v for k, v in json.loads(x).items() if k != "time"} for x in r] for r in rows]
    assert strip[0] == strip[1]
