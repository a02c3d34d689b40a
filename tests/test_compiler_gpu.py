"""The supermodel on a CUDA device: same outputs as on the CPU, and a search step that trains.

Marked `gpu`; skipped where torch sees no CUDA device (CI has none).
"""

from __future__ import annotations

import copy

import pytest
import torch

import onnxmtl
from onnxmtl.compiler import SHARED, SKIP, SPECIFIC, compile
from tests.helpers import assert_close, losses, tasks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def exact_matmul():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("exporter", ["dynamo", "legacy17"])
def test_cuda_outputs_match_cpu(tiny_export, exporter):
    graph = onnxmtl.load(tiny_export(exporter, fold_bn=True))
    cpu = compile(graph, tasks()).eval()
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for branch in (SHARED, SPECIFIC, SKIP):
            policy = cpu.uniform_policy(branch)
            want = cpu(x, mode="fixed", policy=policy)
            got = gpu(x.cuda(), mode="fixed", policy=policy)
            for name in want:
                assert_close(got[name].cpu(), want[name], f"{exporter} {branch} {name}")


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_cuda_search_step_reaches_logits(tiny_export, mode):
    model = compile(onnxmtl.load(tiny_export("legacy17")), tasks()).cuda().train()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    torch.manual_seed(0)
    loss = losses(model, x, mode, device="cuda")
    loss.backward()
    grad = model.policy_logits.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
