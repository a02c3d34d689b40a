"""The phases of a run, in order: warm-up, search, post-train (a fixed policy's run has only
post-train)."""

from onnxmtl.training.phases.phase import Optimizers, Phase
from onnxmtl.training.phases.post_train import PostTrain
from onnxmtl.training.phases.search import Search
from onnxmtl.training.phases.warmup import Warmup

DONE = "done"  # a checkpoint's phase after the last one

__all__ = ["DONE", "Optimizers", "Phase", "PostTrain", "Search", "Warmup"]
