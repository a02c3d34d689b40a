"""Mixed precision: how 'auto' resolves, bf16 tracking fp32, the fp16 scaler surviving a resume,
and (marked `gpu`, skipped without CUDA) autocast on a CUDA device."""

from __future__ import annotations

import json

import pytest
import torch

from onnxmtl.errors import ConfigError
from onnxmtl.training import SearchConfig, Trainer
from onnxmtl.training.precision import Precision, resolve_precision
from tests.helpers import TINY, tiny_model


def test_auto_is_fp32_on_the_cpu_and_names_are_checked():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    fp32 = Precision("auto", cpu)
    assert fp32.dtype is None and not fp32.scaler.is_enabled()
    assert not Precision("bf16", cpu).scaler.is_enabled()
    assert Precision("fp16", cpu).scaler.is_enabled()
    with pytest.raises(ConfigError, match="precision='fp8'"):
        SearchConfig().with_options(precision="fp8")


def _first_losses(tiny_export, train, tmp_path, precision: str) -> tuple[list[dict], Trainer]:
    config = SearchConfig().with_options(**TINY, precision=precision)
    trainer = Trainer(
        tiny_model(tiny_export, train.tasks()), train, config, tmp_path, progress=False
    )
    trainer.run()
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return rows, trainer


def test_bf16_autocast_tracks_fp32(tiny_export, scenes, tmp_path):
    """Same seed, same batches: the first loss (before any update) agrees within bf16's
    precision (2^-8 relative per rounding; 3% allowed over a whole network), and the
    weights stay fp32."""
    train, _ = scenes
    fp32, _ = _first_losses(tiny_export, train, tmp_path / "fp32", "fp32")
    bf16, trainer = _first_losses(tiny_export, train, tmp_path / "bf16", "bf16")
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=3e-2)
    assert bf16[0]["loss"] != fp32[0]["loss"]  # autocast did run in bf16
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in bf16)


def test_fp16_scaler_state_is_checkpointed_and_resumed(tiny_export, scenes, tmp_path):
    train, _ = scenes
    config = SearchConfig().with_options(**TINY, precision="fp16")
    whole = tiny_model(tiny_export, train.tasks())
    Trainer(whole, train, config, tmp_path / "a", progress=False).run()
    first = tiny_model(tiny_export, train.tasks())
    stopped = Trainer(first, train, config, tmp_path / "b", progress=False)
    stopped.run(stop_after=5)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert state["scaler"] == stopped.session.precision.scaler.state_dict()
    resumed = tiny_model(tiny_export, train.tasks())
    Trainer(resumed, train, config, tmp_path / "b", progress=False).run(resume=True)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("precision", ["auto", "fp16"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_search_under_autocast(tiny_export, scenes, tmp_path, precision):
    train, _ = scenes
    config = SearchConfig().with_options(**TINY, device="cuda", precision=precision)
    rows, _ = _first_losses(tiny_export, train, tmp_path / "cpu", "fp32")
    expected = "fp16" if precision == "fp16" or not torch.cuda.is_bf16_supported() else "bf16"
    cuda = Trainer(
        tiny_model(tiny_export, train.tasks()), train, config, tmp_path / "cuda", progress=False
    )
    assert cuda.session.precision.name == expected
    cuda.run()
    got = [json.loads(r) for r in (tmp_path / "cuda" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in got)
    assert got[0]["loss"] == pytest.approx(rows[0]["loss"], rel=5e-2)
